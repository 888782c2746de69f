/*
 * Kernel-like macros for riscv64 rule cases, written for klpdiff's tests.
 * Each macro emits the special-section entry the riscv kernel emits for the
 * same construct (layouts as in rules/riscv64/special-sections.yaml and the
 * shared rules). Every `.long x - .` is an ADD32/SUB32 pair in the object.
 */
#ifndef KLPDIFF_TEST_KERNEL_H
#define KLPDIFF_TEST_KERNEL_H

#include "kernel-common.h"

/* riscv traces through -fpatchable-function-entry, so notrace also drops the NOPs */
#undef notrace
#define notrace __attribute__((__no_instrument_function__, __patchable_function_entry__(0, 0)))

/* struct bug_entry, relative (arch/riscv/include/asm/bug.h): {s32 addr; s32 file; u16 line; u16 flags} */
#define _BUG_FLAGS(flags)                                                 \
	asm volatile("1: ebreak\n"                                        \
		     ".pushsection __bug_table,\"aw\"\n"                  \
		     ".align 2\n"                                         \
		     "2: .long 1b - .\n"                                  \
		     " .long %0 - .\n"                                    \
		     " .short %1, %2\n"                                   \
		     ".popsection" : : "i" (__FILE__), "i" (__LINE__), "i" (flags))

/* struct jump_entry, relative (arch/riscv/include/asm/jump_label.h): {s32 code; s32 target; long key} */
#define ARCH_JUMP_LABEL_ASM \
	".option push\n\t.option norelax\n\t.option norvc\n\t" \
	"1: nop\n\t" \
	".option pop\n\t" \
	".pushsection __jump_table, \"aw\"\n\t" \
	".align 3\n\t" \
	".long 1b - ., %l[l_yes] - .\n\t" \
	".dword %0 - .\n\t" \
	".popsection\n\t"
#define ARCH_KEY_OPERAND(key) "i" (key)

/* struct exception_table_entry (arch/riscv/include/asm/extable.h): {s32 insn; s32 fixup; s16 type; s16 data} */
#define ARCH_EXTABLE_LOAD_ASM \
	"1: lw %1, 0(%2)\n" \
	"2:\n" \
	".pushsection __ex_table,\"a\"\n" \
	" .balign 4\n" \
	" .long 1b - ., 2b - .\n" \
	" .short 1, 0\n" \
	".popsection\n"
#define ARCH_EXTABLE_LOAD_OPERANDS(err, val, p) "+r" (err), "=r" (val) : "r" (p)

#define TRACEPOINT_PTR(tp) asm(".pushsection __tracepoints_ptrs,\"a\"\n .long " #tp " - .\n.popsection\n")

#include "kernel-sites.h"

#endif
