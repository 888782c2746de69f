/* SPDX-License-Identifier: GPL-2.0 */
/*
 * klpdiff's own patch-author macros. Each leaves data in a section that
 * klpdiff's rules know (rules/sections.yaml markers) and that the kernel's
 * linker scripts discard.
 *
 * KLPDIFF_ALLOW_LAYOUT_CHANGE(struct foo): the patch changes the layout of
 * struct foo and its author vouches that the livepatch's code never reads or
 * writes the running kernel's existing objects of that type with the new
 * layout (for example: a member only the patched code uses, in objects only
 * the patched code allocates). Without it klpdiff refuses the change. The
 * type is written as klpdiff names it: "struct foo", "union foo", "enum foo",
 * or a typedef's name for an anonymous type.
 */
#ifndef _KLPDIFF_MACROS_H
#define _KLPDIFF_MACROS_H

#include <linux/compiler.h>

#define KLPDIFF_ALLOW_LAYOUT_CHANGE(type)						\
	static const char __UNIQUE_ID(klpdiff_allow_layout_)[] __used __aligned(1)	\
	__section(".discard.klpdiff.allow_layout_change") = #type

#endif /* _KLPDIFF_MACROS_H */
