/* SPDX-License-Identifier: GPL-2.0 */
/*
 * klpdiff: a syscall definition whose body has a name of its own.
 *
 * SYSCALL_DEFINEx() puts the body in `static inline long __do_sys_<name>()`,
 * which the kernel's `inline` makes notrace: when GCC keeps it out of line,
 * a change to it cannot be redirected. KLPDIFF_SYSCALL_DEFINEx(x, body, name,
 * ...) defines the same entry points as the arch's __SYSCALL_DEFINEx (the
 * stubs the syscall table calls, built with the arch's own stub macros), but
 * names the body `<body>_<name>`: the patched body is a new function and
 * the traceable entry stub is what changes. Used by kpatch-syscall.h
 * (KPATCH_SYSCALL_DEFINEx) and linux/livepatch_helpers.h (KLP_SYSCALL_DEFINEx).
 * Like kpatch's and klp-build's macros it records no new syscall metadata: the
 * running kernel keeps its own trace events for the syscall.
 */
#ifndef _KLPDIFF_SYSCALL_H
#define _KLPDIFF_SYSCALL_H

#include <linux/syscalls.h>

/* the body of __se_sys_<name>, as the x86_64, powerpc and generic wrappers write it */
#define __KLPDIFF_SE_SYS(x, body, name, ...)					\
	{									\
		long ret = body##name(__MAP(x, __SC_CAST, __VA_ARGS__));	\
		__MAP(x, __SC_TEST, __VA_ARGS__);				\
		__PROTECT(x, ret, __MAP(x, __SC_ARGS, __VA_ARGS__));		\
		return ret;							\
	}

/* an entry `<entry>_<name>(regs)` that the table calls with the registers, which `to_args` (the arch's
 * SC_<ARCH>_REGS_TO_ARGS) unpacks for __se_sys_<name> */
#define __KLPDIFF_REGS_SYSCALLx(x, entry, to_args, body, name, ...)		\
	asmlinkage long entry##name(const struct pt_regs *regs);		\
	static long __se_sys##name(__MAP(x, __SC_LONG, __VA_ARGS__));		\
	static inline long body##name(__MAP(x, __SC_DECL, __VA_ARGS__));	\
	asmlinkage long entry##name(const struct pt_regs *regs)		\
	{									\
		return __se_sys##name(to_args(x, __VA_ARGS__));		\
	}									\
	static long __se_sys##name(__MAP(x, __SC_LONG, __VA_ARGS__))		\
	__KLPDIFF_SE_SYS(x, body, name, __VA_ARGS__)				\
	static inline long body##name(__MAP(x, __SC_DECL, __VA_ARGS__))

#if defined(CONFIG_X86_64)

#define KLPDIFF_SYSCALL_DEFINEx(x, body, name, ...)				\
	static long __se_sys##name(__MAP(x, __SC_LONG, __VA_ARGS__));		\
	static inline long body##name(__MAP(x, __SC_DECL, __VA_ARGS__));	\
	__X64_SYS_STUBx(x, name, __VA_ARGS__)					\
	__IA32_SYS_STUBx(x, name, __VA_ARGS__)					\
	static long __se_sys##name(__MAP(x, __SC_LONG, __VA_ARGS__))		\
	__KLPDIFF_SE_SYS(x, body, name, __VA_ARGS__)				\
	static inline long body##name(__MAP(x, __SC_DECL, __VA_ARGS__))

#elif defined(CONFIG_S390)

#define KLPDIFF_SYSCALL_DEFINEx(x, body, name, ...)				\
	long __s390x_sys##name(struct pt_regs *regs);				\
	static inline long __se_sys##name(__MAP(x, __SC_LONG, __VA_ARGS__));	\
	static inline long body##name(__MAP(x, __SC_DECL, __VA_ARGS__));	\
	__S390_SYS_STUBx(x, name, __VA_ARGS__);					\
	long __s390x_sys##name(struct pt_regs *regs)				\
	{									\
		return __se_sys##name(SC_S390_REGS_TO_ARGS(x, __VA_ARGS__));	\
	}									\
	static inline long __se_sys##name(__MAP(x, __SC_LONG, __VA_ARGS__))	\
	{									\
		__MAP(x, __SC_TEST, __VA_ARGS__);				\
		return body##name(__MAP(x, __SC_CAST, __VA_ARGS__));		\
	}									\
	static inline long body##name(__MAP(x, __SC_DECL, __VA_ARGS__))

#elif defined(CONFIG_PPC64) && defined(CONFIG_ARCH_HAS_SYSCALL_WRAPPER)

/* the table calls sys_<name>(regs) */
#define KLPDIFF_SYSCALL_DEFINEx(x, body, name, ...)				\
	__KLPDIFF_REGS_SYSCALLx(x, sys, SC_POWERPC_REGS_TO_ARGS, body, name, __VA_ARGS__)

#elif defined(CONFIG_RISCV) && defined(CONFIG_64BIT)

/* the table calls __riscv_sys_<name>(regs) (arch/riscv/include/asm/syscall_wrapper.h) */
#define KLPDIFF_SYSCALL_DEFINEx(x, body, name, ...)				\
	__KLPDIFF_REGS_SYSCALLx(x, __riscv_sys, SC_RISCV_REGS_TO_ARGS, body, name, __VA_ARGS__)

#elif !defined(CONFIG_ARCH_HAS_SYSCALL_WRAPPER)

/* the generic form (include/linux/syscalls.h): sys_<name> is an alias of __se_sys_<name> */
#define KLPDIFF_SYSCALL_DEFINEx(x, body, name, ...)				\
	asmlinkage long sys##name(__MAP(x, __SC_DECL, __VA_ARGS__))		\
		__attribute__((alias(__stringify(__se_sys##name))));		\
	static inline long body##name(__MAP(x, __SC_DECL, __VA_ARGS__));	\
	asmlinkage long __se_sys##name(__MAP(x, __SC_LONG, __VA_ARGS__));	\
	asmlinkage long __se_sys##name(__MAP(x, __SC_LONG, __VA_ARGS__))	\
	__KLPDIFF_SE_SYS(x, body, name, __VA_ARGS__)				\
	static inline long body##name(__MAP(x, __SC_DECL, __VA_ARGS__))

#else
#error "klpdiff-syscall.h: no syscall wrapper form for this architecture yet"
#endif

#endif /* _KLPDIFF_SYSCALL_H */
