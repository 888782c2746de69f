/* SPDX-License-Identifier: GPL-2.0 */
/*
 * klpdiff's linux/livepatch_helpers.h: the patch-author macros of upstream's
 * klp-build (Linux 6.19+), for kernels older than that. A tree that has its
 * own include/linux/livepatch_helpers.h uses that one (its include path comes
 * first). Callbacks are pointers named __klp_<kind>_callback_<object> in
 * .discard.klp_callback_ptrs, the object being KBUILD_MODNAME in a module's
 * code and vmlinux otherwise.
 */
#ifndef _LINUX_LIVEPATCH_HELPERS_H
#define _LINUX_LIVEPATCH_HELPERS_H

#include <linux/livepatch.h>
#include <linux/static_call.h>
#include "../klpdiff-syscall.h"

#ifdef MODULE
#define KLP_OBJNAME __KBUILD_MODNAME
#else
#define KLP_OBJNAME vmlinux
#endif

#define __KLP_CALLBACK(kind, ret, func)						\
	ret (*__PASTE(__klp_##kind##_callback_, KLP_OBJNAME))(struct klp_object *)	\
	__used __section(".discard.klp_callback_ptrs") = func

#define KLP_PRE_PATCH_CALLBACK(func)	__KLP_CALLBACK(pre_patch, int, func)
#define KLP_POST_PATCH_CALLBACK(func)	__KLP_CALLBACK(post_patch, void, func)
#define KLP_PRE_UNPATCH_CALLBACK(func)	__KLP_CALLBACK(pre_unpatch, void, func)
#define KLP_POST_UNPATCH_CALLBACK(func)	__KLP_CALLBACK(post_unpatch, void, func)

#define KLP_SYSCALL_DEFINE1(name, ...) KLPDIFF_SYSCALL_DEFINEx(1, __klp_do_sys, _##name, __VA_ARGS__)
#define KLP_SYSCALL_DEFINE2(name, ...) KLPDIFF_SYSCALL_DEFINEx(2, __klp_do_sys, _##name, __VA_ARGS__)
#define KLP_SYSCALL_DEFINE3(name, ...) KLPDIFF_SYSCALL_DEFINEx(3, __klp_do_sys, _##name, __VA_ARGS__)
#define KLP_SYSCALL_DEFINE4(name, ...) KLPDIFF_SYSCALL_DEFINEx(4, __klp_do_sys, _##name, __VA_ARGS__)
#define KLP_SYSCALL_DEFINE5(name, ...) KLPDIFF_SYSCALL_DEFINEx(5, __klp_do_sys, _##name, __VA_ARGS__)
#define KLP_SYSCALL_DEFINE6(name, ...) KLPDIFF_SYSCALL_DEFINEx(6, __klp_do_sys, _##name, __VA_ARGS__)

#define KLP_STATIC_CALL(name) ((typeof(STATIC_CALL_TRAMP(name)) *)static_call_query(name))

#endif /* _LINUX_LIVEPATCH_HELPERS_H */
