/* SPDX-License-Identifier: GPL-2.0 */
/*
 * klpdiff's kpatch-syscall.h: the names kpatch-build patches use. A syscall
 * written with KPATCH_SYSCALL_DEFINEn instead of SYSCALL_DEFINEn has its body
 * in __kpatch_do_sys_<name> (see klpdiff-syscall.h).
 */
#ifndef _KLPDIFF_KPATCH_SYSCALL_H
#define _KLPDIFF_KPATCH_SYSCALL_H

#include "klpdiff-syscall.h"

#define KPATCH_SYSCALL_DEFINE1(name, ...) KLPDIFF_SYSCALL_DEFINEx(1, __kpatch_do_sys, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE2(name, ...) KLPDIFF_SYSCALL_DEFINEx(2, __kpatch_do_sys, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE3(name, ...) KLPDIFF_SYSCALL_DEFINEx(3, __kpatch_do_sys, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE4(name, ...) KLPDIFF_SYSCALL_DEFINEx(4, __kpatch_do_sys, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE5(name, ...) KLPDIFF_SYSCALL_DEFINEx(5, __kpatch_do_sys, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE6(name, ...) KLPDIFF_SYSCALL_DEFINEx(6, __kpatch_do_sys, _##name, __VA_ARGS__)

#endif /* _KLPDIFF_KPATCH_SYSCALL_H */
