"""A distribution's stock kernel, by the release name `uname -r` prints, fetched from its packages.

In: a kernel release (`6.1.0-57-amd64`), the machine's distribution (`/etc/os-release`) and a
folder of klpdiff's cache. Out: `KernelFiles` — the stock kernel's config, its vmlinux with
symbols, Module.symvers, its modules, its bootable image and the source it was built from, each
unpacked into that folder from the distribution's own packages, as an ordinary user: packages are
downloaded (`apt-get download` needs no root) and unpacked with `dpkg-deb`, never installed.

A `Distribution` knows its package names; Debian is the one klpdiff knows. The design leaves room
for others (an RPM distribution names the same four things: the kernel, its debuginfo, its devel
package and its source), whose packages this machine cannot reach to test.

Each file lands complete or not at all (unpacked beside, then renamed); what is already there is
not fetched again.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from ..core.errors import InputError
from ..core.outputs import Progress
from ..core.records import record

Runner = Callable[[Sequence[str], Path | None], "subprocess.CompletedProcess[str]"]


class DistroError(InputError):
    """A stock kernel klpdiff cannot get as asked (unknown distribution, kernel or version)."""


@record
class KernelPackages:
    """The packages of one stock kernel, as the distribution's archive lists them."""

    distribution: str
    release: str          # 6.1.0-57-amd64
    version: str          # the version the kernel's packages carry: 6.1.192-3
    arch: str             # the distribution's name for the machine: amd64
    image: str            # the package with the kernel, its config and modules
    debug: str            # the package with its vmlinux with symbols
    headers: str          # the package with its Module.symvers
    source: str | None    # the package with the source it was built from (None: the user gives it)


@record
class KernelFiles:
    """A stock kernel's files, unpacked in klpdiff's cache."""

    packages: KernelPackages
    config: Path
    vmlinux: Path
    symvers: Path
    modules: Path          # lib/modules/RELEASE
    image: Path            # the bootable kernel image
    source: Path           # the source tarball (.tar.*) or tree it was built from


class Distribution(Protocol):
    name: str

    def locate(self, release: str, source_given: bool) -> KernelPackages:
        """The packages of `release`; refuses a kernel the archive does not have, or whose source it
        does not carry in the same version (unless the user gives the source)."""
        ...

    def fetch(self, packages: KernelPackages, folder: Path, progress: Progress) -> KernelFiles:
        """Download and unpack what `packages` name into `folder` (what is there already is kept)."""
        ...


def run(argv: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, errors="surrogateescape")
    except OSError as e:
        raise DistroError(f"{argv[0]}: cannot run it ({e.strerror})") from e


def read_os_release(path: Path) -> dict[str, str]:
    """The KEY=value pairs of an os-release file (values unquoted)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise DistroError(f"{path}: cannot read it ({e.strerror}): which distribution is this?") from e
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[A-Z_]+", key):
            fields[key] = value.strip().strip("'\"")
    return fields


def distribution(os_release: Path = Path("/etc/os-release"), runner: Runner = run) -> Distribution:
    """The distribution this machine runs, if klpdiff knows its packages."""
    fields = read_os_release(os_release)
    ident = fields.get("ID", "")
    if ident == "debian":
        return Debian(runner)
    known = ", ".join(KNOWN)
    raise DistroError(f"{os_release}: this machine runs {fields.get('PRETTY_NAME') or ident or 'an unnamed system'}, "
                      f"whose kernel packages klpdiff does not know (it knows: {known}); build against a kernel "
                      f"tree with --kdir")


def fields_of(text: str) -> dict[str, str]:
    """The fields of one deb822 paragraph (`apt-cache show`), continuation lines dropped."""
    out = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, sep, value = line.partition(":")
        if sep and not line[0].isspace():
            out[key] = value.strip()
    return out


def upstream_series(version: str) -> str:
    """6.1.192-3 -> 6.1; 6.12.118-1~deb12u1 -> 6.12."""
    m = re.match(r"^(?:[0-9]+:)?([0-9]+\.[0-9]+)", version)
    if not m:
        raise DistroError(f"{version}: not a kernel package version")
    return m.group(1)


def upstream_version(version: str) -> str:
    """6.1.192-3 -> 6.1.192."""
    return re.sub(r"^[0-9]+:", "", version).split("-")[0].split("~")[0]


class Debian:
    """Debian's kernel packages: `linux-image-R-unsigned` (or `linux-image-R`), `linux-image-R-dbg`,
    `linux-headers-R` and `linux-source-X.Y` of the same version."""

    name = "debian"

    def __init__(self, runner: Runner = run) -> None:
        self.runner = runner

    def _show(self, package: str) -> dict[str, str] | None:
        proc = self.runner(["apt-cache", "show", "--no-all-versions", package], None)
        return fields_of(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None

    def locate(self, release: str, source_given: bool) -> KernelPackages:
        if not re.fullmatch(r"[0-9][A-Za-z0-9.+_~-]*", release):
            raise DistroError(f"{release}: not a kernel release name (as `uname -r` prints it)")
        image = f"linux-image-{release}-unsigned"
        shown = self._show(image)
        if shown is None:
            image = f"linux-image-{release}"
            shown = self._show(image)
        if shown is None or not shown.get("Version"):
            raise DistroError(f"{release}: no such kernel in this machine's Debian package lists (no "
                              f"linux-image-{release}-unsigned or linux-image-{release}); is it a Debian kernel? "
                              f"(`apt-get update` refreshes the lists; it needs root)")
        version = shown["Version"]
        built = re.match(r"^linux \(= ([^)]+)\)", shown.get("Built-Using", ""))
        if built and shown.get("Source", "").startswith("linux-signed"):
            version = built.group(1)  # a signed image carries its own version; the kernel's is Built-Using
        arch = shown.get("Architecture", "")
        qualified = f":{arch}" if arch else ""
        for package, what in ((f"linux-image-{release}-dbg", "its vmlinux with symbols"),
                              (f"linux-headers-{release}", "its Module.symvers")):
            other = self._show(f"{package}{qualified}={version}")
            if other is None:
                raise DistroError(f"{release}: the archive has {image} {version} but not {package} {version} "
                                  f"({what})")
        source = f"linux-source-{upstream_series(version)}"
        if not source_given and self._show(f"{source}={version}") is None:
            offered = self.runner(["apt-cache", "madison", source], None).stdout
            versions = sorted({line.split("|")[1].strip() for line in offered.splitlines() if line.count("|") >= 2})
            have = ", ".join(versions) or "none"
            raise DistroError(f"{release}: the kernel is {image} {version}, but the archive's {source} is "
                              f"{have}: not the source it was built from; give that source with --source "
                              f"(a tree or a .tar.xz of {upstream_version(version)})")
        return KernelPackages(self.name, release, version, arch, image, f"linux-image-{release}-dbg",
                              f"linux-headers-{release}", None if source_given else source)

    def fetch(self, packages: KernelPackages, folder: Path, progress: Progress) -> KernelFiles:
        release, version = packages.release, packages.version
        folder.mkdir(parents=True, exist_ok=True)
        arch = f":{packages.arch}" if packages.arch else ""
        root = folder / "root"
        if not (root / "boot" / f"config-{release}").is_file():
            deb = self._download(f"{packages.image}{arch}", version, folder, progress)
            _unpack_all(deb, root)
        vmlinux = folder / f"vmlinux-{release}"
        if not vmlinux.is_file():
            deb = self._download(f"{packages.debug}{arch}", version, folder, progress)
            progress(f"fetch: unpacking vmlinux-{release} from {deb.name}")
            _unpack_one(deb, f"usr/lib/debug/boot/vmlinux-{release}", vmlinux)
        symvers = folder / "Module.symvers"
        if not symvers.is_file():
            deb = self._download(f"{packages.headers}{arch}", version, folder, progress)
            _unpack_one(deb, f"usr/src/linux-headers-{release}/Module.symvers", symvers)
        source = folder / f"{packages.source}.tar.xz"
        if packages.source is not None and not source.is_file():
            deb = self._download(packages.source, version, folder, progress)
            _unpack_one(deb, f"usr/src/{packages.source}.tar.xz", source)
        images = sorted((root / "boot").glob(f"vmlinu[xz]-{release}"))
        return KernelFiles(packages, root / "boot" / f"config-{release}", vmlinux, symvers,
                           root / "lib" / "modules" / release, images[0] if images else root / "boot",
                           source)

    def _download(self, package: str, version: str, folder: Path, progress: Progress) -> Path:
        """`apt-get download PACKAGE=VERSION` into a private folder under `folder`; the .deb's path."""
        progress(f"fetch: downloading {package} {version}")
        downloads = folder / "downloads"
        shutil.rmtree(downloads, ignore_errors=True)
        downloads.mkdir()
        proc = self.runner(["apt-get", "download", "-q", f"{package}={version}"], downloads)
        debs = sorted(downloads.glob("*.deb"))
        if proc.returncode != 0 or len(debs) != 1:
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            raise DistroError(f"{package} {version}: apt-get download failed: {tail}")
        return debs[0]


def _unpack_all(deb: Path, dest: Path) -> None:
    """`dpkg-deb -x` into a folder beside `dest`, renamed to it when complete."""
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    proc = run(["dpkg-deb", "-x", str(deb), str(partial)])
    if proc.returncode != 0:
        raise DistroError(f"{deb}: dpkg-deb could not unpack it: {proc.stderr.strip()}")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(partial, dest)
    deb.unlink()


def _unpack_one(deb: Path, member: str, dest: Path) -> None:
    """One file of a .deb, streamed out of its data archive (which is not read past it)."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    found = False
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|*") as archive:
            for entry in archive:
                if entry.name.removeprefix("./") == member and entry.isfile():
                    data = archive.extractfile(entry)
                    assert data is not None
                    with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.", delete=False) as out:
                        shutil.copyfileobj(data, out, 1 << 20)
                    os.replace(out.name, dest)
                    found = True
                    break
    except (tarfile.TarError, OSError) as e:
        raise DistroError(f"{deb}: cannot read it ({e})") from e
    finally:
        proc.kill()
        proc.wait()
    if not found:
        raise DistroError(f"{deb}: has no {member}")
    deb.unlink()


KNOWN = {"debian": Debian}
