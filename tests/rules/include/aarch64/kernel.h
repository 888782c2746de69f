/*
 * Kernel-like macros for aarch64 rule cases, written for klpdiff's tests.
 * Each macro emits the special-section entry the arm64 kernel emits for the
 * same construct (layouts as in rules/aarch64/special-sections.yaml).
 */
#ifndef KLPDIFF_TEST_KERNEL_H
#define KLPDIFF_TEST_KERNEL_H

#include "kernel-common.h"

/* arm64 traces through -fpatchable-function-entry, so notrace also drops the NOPs */
#undef notrace
#define notrace __attribute__((__no_instrument_function__, __patchable_function_entry__(0, 0)))

/* struct bug_entry, relative: {s32 addr; s32 file; u16 line; u16 flags} */
#define _BUG_FLAGS(flags)                                                 \
	asm volatile("1: brk 0x800\n"                                     \
		     ".pushsection __bug_table,\"aw\"\n"                  \
		     ".align 2\n"                                         \
		     "2: .long 1b - .\n"                                  \
		     " .long %c0 - .\n"                                   \
		     " .short %1, %2\n"                                   \
		     ".popsection" : : "S" (__FILE__), "i" (__LINE__), "i" (flags))

/* struct jump_entry, relative: {s32 code; s32 target; long key} */
#define ARCH_JUMP_LABEL_ASM \
	"1: nop\n\t" \
	".pushsection __jump_table, \"aw\"\n\t" \
	".align 3\n\t" \
	".long 1b - ., %l[l_yes] - .\n\t" \
	".quad %c0 - .\n\t" \
	".popsection\n\t"
#define ARCH_KEY_OPERAND(key) "S" (key)

/* struct exception_table_entry (5.16+): {s32 insn; s32 fixup; s16 type; s16 data} */
#define ARCH_EXTABLE_LOAD_ASM \
	"1: ldr %w1, [%2]\n" \
	"2:\n" \
	".pushsection __ex_table,\"a\"\n" \
	" .align 2\n" \
	" .long 1b - ., 2b - .\n" \
	" .short 1, 0\n" \
	".popsection\n"
#define ARCH_EXTABLE_LOAD_OPERANDS(err, val, p) "+r" (err), "=r" (val) : "r" (p)

/* struct alt_instr: {s32 orig; s32 alt; u16 cpufeature; u8 orig_len; u8 alt_len} */
#define ALTERNATIVE(oldinstr, newinstr, feature)                          \
	"661: " oldinstr "\n662:\n"                                       \
	".pushsection .altinstructions,\"a\"\n"                           \
	" .long 661b - .\n"                                               \
	" .long 663f - .\n"                                               \
	" .hword " #feature "\n"                                          \
	" .byte 662b - 661b\n"                                            \
	" .byte 664f - 663f\n"                                            \
	".popsection\n"                                                   \
	".pushsection .altinstr_replacement,\"ax\"\n"                     \
	"663: " newinstr "\n664:\n"                                       \
	".popsection\n"

#define TRACEPOINT_PTR(tp) asm(".pushsection __tracepoints_ptrs,\"a\"\n .long " #tp " - .\n.popsection\n")

/* A runtime pointer as vmlinux code has it (arch/arm64/include/asm/runtime-const.h). */
#define runtime_const_ptr(sym) ({                                         \
	typeof(sym) __ret;                                                \
	asm_inline("1:\tmovz %0, #0xcdef\n\tmovk %0, #0x89ab, lsl #16\n\t"   \
		   "movk %0, #0x4567, lsl #32\n\tmovk %0, #0x0123, lsl #48\n\t" \
		   ".pushsection runtime_ptr_" #sym ",\"a\"\n\t"           \
		   ".long 1b - .\n\t.popsection" : "=r" (__ret));          \
	__ret; })

#include "kernel-sites.h"

#endif
