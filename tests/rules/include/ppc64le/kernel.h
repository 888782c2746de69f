/*
 * Kernel-like macros for ppc64le rule cases, written for klpdiff's tests.
 * Each macro emits the special-section entry the powerpc kernel emits for the
 * same construct (layouts as in rules/ppc64le/special-sections.yaml).
 */
#ifndef KLPDIFF_TEST_KERNEL_H
#define KLPDIFF_TEST_KERNEL_H

#include "kernel-common.h"

/* struct bug_entry, relative (EMIT_BUG_ENTRY): {s32 addr; s32 file; u16 line, flags} */
#define _BUG_FLAGS(flags)                                                 \
	asm volatile("1: twi 31, 0, 0\n"                                  \
		     ".pushsection __bug_table,\"aw\"\n"                  \
		     "2: .4byte 1b - .\n"                                 \
		     " .4byte %0 - .\n"                                   \
		     " .short %1, %2\n"                                   \
		     " .org 2b+12\n"                                      \
		     ".popsection" : : "i" (__FILE__), "i" (__LINE__), "i" (flags))

/* struct bug_entry before relative pointers: {u64 addr; u64 file; u16 line, flags} = 24 */
#define _BUG_FLAGS_ABS(flags)                                             \
	asm volatile("1: twi 31, 0, 0\n"                                  \
		     ".pushsection __bug_table,\"aw\"\n"                  \
		     "2: .8byte 1b, %0\n"                                 \
		     " .short %1, %2\n"                                   \
		     " .org 2b+24\n"                                      \
		     ".popsection" : : "i" (__FILE__), "i" (__LINE__), "i" (flags))

/* struct jump_entry, relative: {s32 code; s32 target; long key} */
#define ARCH_JUMP_LABEL_ASM \
	"1: nop\n\t" \
	".pushsection __jump_table, \"aw\"\n\t" \
	".balign 8\n\t" \
	".long 1b - ., %l[l_yes] - .\n\t" \
	".8byte %c0 - .\n\t" \
	".popsection\n\t"
#define ARCH_KEY_OPERAND(key) "i" (key)

/* struct exception_table_entry: {s32 insn; s32 fixup} */
#define ARCH_EXTABLE_LOAD_ASM \
	"1: lwz %1, 0(%2)\n" \
	"2:\n" \
	".pushsection __ex_table,\"a\"\n" \
	" .balign 4\n" \
	" .long 1b - .\n" \
	" .long 2b - .\n" \
	".popsection\n"
#define ARCH_EXTABLE_LOAD_OPERANDS(err, val, p) "+r" (err), "=r" (val) : "b" (p)

/* struct fixup_entry (feature fixups): {mask; value; start, end, alt_start, alt_end offsets} */
#define FTR_SECTION(feature, alt)                                         \
	asm volatile("97: nop\n98:\n"                                     \
		     ".pushsection __ftr_alt_97,\"a\"\n"                  \
		     "99: " alt "\n100:\n"                                \
		     ".popsection\n"                                      \
		     ".pushsection __ftr_fixup,\"a\"\n"                   \
		     " .balign 8\n"                                       \
		     "101: .8byte " #feature ", " #feature "\n"           \
		     " .8byte 97b - 101b, 98b - 101b, 99b - 101b, 100b - 101b\n" \
		     ".popsection\n" ::: "memory")

/* lwsync patch sites (MAKE_LWSYNC_SECTION_ENTRY): one relative long */
#define LWSYNC()                                                          \
	asm volatile("91: lwsync\n"                                       \
		     ".pushsection __lwsync_fixup,\"a\"\n"                \
		     " .align 2\n"                                        \
		     "92: .8byte 91b - 92b\n"                             \
		     ".popsection\n" ::: "memory")

#define TRACEPOINT_PTR(tp) asm(".pushsection __tracepoints_ptrs,\"a\"\n .long " #tp " - .\n.popsection\n")

#include "kernel-sites.h"

#endif
