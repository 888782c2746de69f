/*
 * Kernel-like macros for s390x rule cases, written for klpdiff's tests.
 * Each macro emits the special-section entry the s390 kernel emits for the
 * same construct (layouts as in rules/s390x/special-sections.yaml).
 */
#ifndef KLPDIFF_TEST_KERNEL_H
#define KLPDIFF_TEST_KERNEL_H

#include "kernel-common.h"

/* struct bug_entry (arch/s390/include/asm/bug.h): {s32 addr; s32 file; u16 line; u16 flags} */
#define _BUG_FLAGS(flags)                                                 \
	asm volatile("0: mc 0,0\n"                                        \
		     ".section __bug_table,\"aw\"\n"                      \
		     "1: .long 0b - .\n"                                  \
		     " .long %0 - .\n"                                    \
		     " .short %1, %2\n"                                   \
		     " .org 1b+12\n"                                      \
		     ".previous" : : "i" (__FILE__), "i" (__LINE__), "i" (flags))

/* struct jump_entry, relative: {s32 code; s32 target; long key} */
#define ARCH_JUMP_LABEL_ASM \
	"0: brcl 0, %l[l_yes]\n" \
	".pushsection __jump_table, \"aw\"\n" \
	".balign 8\n" \
	".long 0b - ., %l[l_yes] - .\n" \
	".quad %0 - .\n" \
	".popsection\n"
#define ARCH_KEY_OPERAND(key) "i" (key)

/* struct alt_instr (5.x): {s32 instr; s32 repl; u16 facility; u8 instrlen; u8 replacementlen} */
#define ALTERNATIVE(oldinstr, newinstr, facility)                         \
	"661: " oldinstr "\n662:\n"                                       \
	".pushsection .altinstr_replacement,\"ax\"\n"                     \
	"663: " newinstr "\n664:\n"                                       \
	".popsection\n"                                                   \
	".pushsection .altinstructions,\"a\"\n"                           \
	" .long 661b - .\n"                                               \
	" .long 663b - .\n"                                               \
	" .word " #facility "\n"                                          \
	" .byte 662b - 661b\n"                                            \
	" .byte 664b - 663b\n"                                            \
	".popsection\n"

/* struct exception_table_entry (5.16+): {s32 insn; s32 fixup; s16 type; s16 data} */
#define ARCH_EXTABLE_LOAD_ASM \
	"0: l %1, 0(%2)\n" \
	"1:\n" \
	".pushsection __ex_table,\"a\"\n" \
	" .balign 4\n" \
	" .long 0b - .\n" \
	" .long 1b - .\n" \
	" .short 1, 0\n" \
	".popsection\n"
#define ARCH_EXTABLE_LOAD_OPERANDS(err, val, p) "+d" (err), "=d" (val) : "a" (p)

/* expoline call sites (nospec-insn.h): one s32 per indirect branch */
#define INDIRECT_CALL_SITE(section)                                       \
	asm volatile("0: nopr %%r7\n"                                     \
		     ".pushsection " section ",\"a\"\n"                   \
		     " .long 0b - .\n"                                    \
		     ".popsection\n" ::: "memory")

#define TRACEPOINT_PTR(tp) asm(".pushsection __tracepoints_ptrs,\"a\"\n .long " #tp " - .\n.popsection\n")

/*
 * Runtime constants as vmlinux code has them (arch/s390/include/asm/runtime-const.h):
 * placeholder immediates, and an s32 entry pointing at the site in runtime_{ptr,shift}_<sym>.
 */
#define runtime_const_ptr(sym) ({                                         \
	typeof(sym) __ret;                                                \
	asm_inline("0:	iihf	%[__ret],%[c1]\n"                          \
		   "	iilf	%[__ret],%[c2]\n"                             \
		   ".pushsection runtime_ptr_" #sym ",\"a\"\n"              \
		   ".long 0b - .\n"                                        \
		   ".popsection"                                           \
		   : [__ret] "=d" (__ret)                                  \
		   : [c1] "i" (0x01234567UL), [c2] "i" (0x89abcdefUL));    \
	__ret; })
#define runtime_const_shift_right_32(val, sym) ({                         \
	unsigned int __ret = (val);                                       \
	asm_inline("0:	srl	%[__ret],12\n"                              \
		   ".pushsection runtime_shift_" #sym ",\"a\"\n"            \
		   ".long 0b - .\n"                                        \
		   ".popsection"                                           \
		   : [__ret] "+d" (__ret));                                \
	__ret; })

#include "kernel-sites.h"

#endif
