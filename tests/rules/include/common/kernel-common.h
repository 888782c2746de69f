/*
 * Kernel-like definitions shared by every arch's rule-case header, written for
 * klpdiff's tests. The arch headers (include/<arch>/kernel.h) add the asm that
 * emits each special-section entry the way that arch's kernel does.
 */
#ifndef KLPDIFF_TEST_KERNEL_COMMON_H
#define KLPDIFF_TEST_KERNEL_COMMON_H

#define __stringify_1(x) #x
#define __stringify(x) __stringify_1(x)
#define __used __attribute__((__used__))
#define __section(s) __attribute__((__section__(s)))
#define noinline __attribute__((__noinline__))
#define __always_inline inline __attribute__((__always_inline__))
#define asm_inline asm __inline
#define __cold __attribute__((__cold__))
#define __init __section(".init.text") __cold
#define notrace __attribute__((__no_instrument_function__))
#define unlikely(x) __builtin_expect(!!(x), 0)

typedef unsigned long size_t;

extern int printk(const char *fmt, ...);
extern void __might_sleep(const char *file, int line);
extern void __warn_printk(const char *fmt, ...);
#define might_sleep() __might_sleep(__FILE__, __LINE__)


#define WARN_ON(cond) ({ int __c = !!(cond); if (unlikely(__c)) _BUG_FLAGS(1 << 0); unlikely(__c); })
#define static_branch_unlikely(key) unlikely(arch_static_branch(key))
struct static_key { int enabled; };

/* .printk_index: an array of pointers to struct pi_entry */
struct pi_entry {
	const char *fmt, *func, *file;
	unsigned int line;
	const char *level, *subsys_fmt_prefix;
} __attribute__((packed));
#define printk_index(_fmt) ({                                              \
	static const struct pi_entry _entry __used = {                    \
		.fmt = _fmt, .func = __func__, .file = __FILE__, .line = __LINE__ }; \
	static const struct pi_entry *_entry_ptr __used __section(".printk_index") = &_entry; \
	printk(_fmt); })

/* tracepoints: struct tracepoint and the pointer array entry */
struct tracepoint { const char *name; struct static_key key; };

/* MODULE_IMPORT_NS in built-in code: "<modname>.import_ns=NS" in .modinfo */
#define MODULE_IMPORT_NS(ns) \
	static const char __UNIQUE_ns_##ns[] __used __section(".modinfo") __attribute__((aligned(1))) = \
		"testmod.import_ns=" #ns

/* kpatch-macros.h: callbacks and markers */
struct kpatch_pre_patch_callback { int (*fn)(void *obj); char *objname; };
#define KPATCH_PRE_PATCH_CALLBACK(_fn) \
	static struct kpatch_pre_patch_callback kpatch_pre_patch_data __used \
	__section(".kpatch.callbacks.pre_patch") = { .fn = _fn, .objname = 0 }
#define KPATCH_IGNORE_FUNCTION(_fn) \
	void *__kpatch_ignore_func_##_fn __section(".kpatch.ignore.functions") = _fn
#define KPATCH_FORCE_UNSAFE(_fn) \
	void *__kpatch_force_func_##_fn __section(".kpatch.force") = _fn

/* klpdiff-macros.h: a layout change the author vouches for */
#define __KLPDIFF_PASTE(a, b) a##b
#define __KLPDIFF_ID(n) __KLPDIFF_PASTE(__klpdiff_allow_layout_, n)
#define KLPDIFF_ALLOW_LAYOUT_CHANGE(type) \
	static const char __KLPDIFF_ID(__COUNTER__)[] __used __attribute__((aligned(1))) \
	__section(".discard.klpdiff.allow_layout_change") = #type

#endif
