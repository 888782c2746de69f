/*
 * The guest's /init for the end-to-end test on machines without a busybox of
 * their own: mount proc and sysfs, load the livepatch module, wait for the
 * transition, print what the host checks, reboot (QEMU runs with -no-reboot). Built static with the
 * arch's Debian cross compiler.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/klog.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <unistd.h>

static void read_file(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, size - 1);

	buf[n > 0 ? n : 0] = '\0';
	if (n > 0 && buf[n - 1] == '\n')
		buf[n - 1] = '\0';
	if (fd >= 0)
		close(fd);
}

/* read(2) into `buf`: "ok", or the errno name the user-access check expects */
static const char *read_result(void *buf, size_t count)
{
	int fd = open("/proc/version", O_RDONLY);
	ssize_t n = read(fd, buf, count);
	int err = errno;

	close(fd);
	if (n >= 0)
		return "ok";
	return err == EFAULT ? "EFAULT" : err == ENOTTY ? "ENOTTY" : "other";
}

/*
 * The user-access fix: vfs_read answers a count of 0x7ffff001 with ENOTTY, on a new line after its
 * access_ok(buf, count). With a valid buffer the new path runs. With the first address above user
 * space, or a kernel address, access_ok() itself must refuse (EFAULT) before that line: the
 * livepatched copy decides alone, so a wrong limit there would answer ENOTTY. The kernel log must
 * show no fault inside a copy to user space either.
 */
#if defined(__powerpc64__)
#define ABOVE_USER 0x0010000000000000ul	/* TASK_SIZE_USER64 is at most 4 PB */
#define KERNEL_ADDRESS 0xc000000000000000ul	/* PAGE_OFFSET */
#else
#define ABOVE_USER 0x0000800000000000ul	/* x86_64: TASK_SIZE_MAX with 4-level paging, rounded up */
#define KERNEL_ADDRESS 0xffffffff81000000ul	/* the kernel text mapping */
#endif

static void check_user_access(void)
{
	static char buf[64], log[1 << 16];
	const char *patched = read_result(buf, 0x7ffff001);
	const char *above_user = read_result((void *)ABOVE_USER, 0x7ffff001);
	const char *kernel = read_result((void *)KERNEL_ADDRESS, 0x7ffff001);
	int n = klogctl(3, log, sizeof(log) - 1);

	log[n > 0 ? n : 0] = '\0';
	printf("KLPDIFF-E2E: useraccess=%s %s %s %s\n", patched, above_user, kernel,
	       strstr(log, "user access") ? "fault-in-copy" : "clean");
}

int main(void)
{
	static char enabled[64], transition[64], cmdline[1024], meminfo[8192];
	const char *lp = "/sys/kernel/livepatch/livepatch_e2e";
	char path[256];
	int fd, i;

	mount("proc", "/proc", "proc", 0, NULL);
	mount("sysfs", "/sys", "sysfs", 0, NULL);
	printf("KLPDIFF-E2E: booted\n");
	fd = open("/livepatch-e2e.ko", O_RDONLY);
	if (fd < 0 || syscall(SYS_finit_module, fd, "", 0) != 0) {
		printf("KLPDIFF-E2E: insmod failed\n");
	} else {
		for (i = 0; i < 100; i++) {
			snprintf(path, sizeof(path), "%s/transition", lp);
			read_file(path, transition, sizeof(transition));
			if (!strcmp(transition, "0"))
				break;
			usleep(100000);
		}
		snprintf(path, sizeof(path), "%s/enabled", lp);
		read_file(path, enabled, sizeof(enabled));
		read_file("/proc/cmdline", cmdline, sizeof(cmdline));
		read_file("/proc/meminfo", meminfo, sizeof(meminfo));
		printf("KLPDIFF-E2E: enabled=%s transition=%s\n", enabled, transition);
		printf("KLPDIFF-E2E: cmdline=%s\n", cmdline);
		char *line = strstr(meminfo, "KlpdiffE2E:");
		if (line)
			*strchrnul(line, '\n') = '\0';
		printf("KLPDIFF-E2E: meminfo=%s\n", line ? line : "");
		read_file("/proc/self/status", meminfo, sizeof(meminfo));
		line = strstr(meminfo, "KlpdiffE2E:");
		if (line)
			*strchrnul(line, '\n') = '\0';
		printf("KLPDIFF-E2E: status=%s\n", line ? line : "");
		check_user_access();
		struct sysinfo si;
		printf("KLPDIFF-E2E: sysinfo-procs=%d\n", sysinfo(&si) == 0 ? si.procs : -1);
		struct utsname un;
		printf("KLPDIFF-E2E: domainname=%s\n", uname(&un) == 0 ? un.domainname : "?");
		/* disable it: the unpatch callbacks run, and the transition back completes */
		snprintf(path, sizeof(path), "%s/enabled", lp);
		fd = open(path, O_WRONLY);
		if (fd < 0 || write(fd, "0", 1) != 1)
			printf("KLPDIFF-E2E: disabling failed\n");
		if (fd >= 0)
			close(fd);
		/* a disabled livepatch is freed once its transition completes: its sysfs folder goes */
		for (i = 0; i < 100 && access(lp, F_OK) == 0; i++)
			usleep(100000);
		printf("KLPDIFF-E2E: after-disable %s\n", access(lp, F_OK) == 0 ? "still-there" : "removed");
	}
	fflush(stdout);
	sync();
	reboot(RB_AUTOBOOT);  /* with -no-reboot QEMU exits; tinyconfig has no ACPI power-off */
	return 0;
}
