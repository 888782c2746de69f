/* SPDX-License-Identifier: GPL-2.0 */
/*
 * klpdiff's kpatch-macros.h: the patch-author macros of kpatch-build, so that
 * patches written for it build unchanged with `klpdiff build`. Each macro
 * leaves data in a section that klpdiff's rules know (rules/sections.yaml
 * markers): callbacks in .kpatch.callbacks.<kind>, function pointers in
 * .kpatch.force and .kpatch.ignore.functions, section names in
 * .kpatch.ignore.sections.
 */
#ifndef _KLPDIFF_KPATCH_MACROS_H
#define _KLPDIFF_KPATCH_MACROS_H

#include <linux/compiler.h>
#include <linux/livepatch.h>
#include <linux/printk.h>
#include <linux/static_call.h>
#include "klpdiff-macros.h"

typedef struct klp_object patch_object;

/* one callback: the function, and the object it is for (NULL: the object the patch was built from) */
struct kpatch_pre_patch_callback { int (*fn)(patch_object *obj); const char *objname; };
struct kpatch_post_patch_callback { void (*fn)(patch_object *obj); const char *objname; };
struct kpatch_pre_unpatch_callback { void (*fn)(patch_object *obj); const char *objname; };
struct kpatch_post_unpatch_callback { void (*fn)(patch_object *obj); const char *objname; };

#define __KPATCH_CALLBACK(kind, _fn)						\
	static struct kpatch_##kind##_callback kpatch_##kind##_data		\
	__section(".kpatch.callbacks." #kind) __used = { .fn = _fn, .objname = NULL }

#define KPATCH_PRE_PATCH_CALLBACK(_fn)	__KPATCH_CALLBACK(pre_patch, _fn)
#define KPATCH_POST_PATCH_CALLBACK(_fn)	__KPATCH_CALLBACK(post_patch, _fn)
#define KPATCH_PRE_UNPATCH_CALLBACK(_fn)	__KPATCH_CALLBACK(pre_unpatch, _fn)
#define KPATCH_POST_UNPATCH_CALLBACK(_fn)	__KPATCH_CALLBACK(post_unpatch, _fn)

/* leave a changed function, or every function of a section, out of the livepatch */
#define KPATCH_IGNORE_FUNCTION(_fn)						\
	static void *__kpatch_ignore_func_##_fn __section(".kpatch.ignore.functions") __used = (void *)_fn
#define KPATCH_IGNORE_SECTION(_sec)						\
	static char *__UNIQUE_ID(kpatch_ignore_section_) __section(".kpatch.ignore.sections") __used = _sec

/* patch a function although it would be refused (the author vouches for it) */
#define KPATCH_FORCE_UNSAFE(_fn)						\
	static void *__kpatch_force_func_##_fn __section(".kpatch.force") __used = (void *)_fn

#define KPATCH_PRINTK(_fmt, ...) printk(_fmt, ##__VA_ARGS__)

/* call a static call whose key another module owns: through the key's current function */
#define KPATCH_STATIC_CALL(name) ((typeof(STATIC_CALL_TRAMP(name)) *)static_call_query(name))

#endif /* _KLPDIFF_KPATCH_MACROS_H */
