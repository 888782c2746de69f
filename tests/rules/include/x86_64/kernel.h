/*
 * Kernel-like macros for x86_64 rule cases, written for klpdiff's tests.
 *
 * Each macro emits the same special-section entry the kernel emits for the
 * same construct (layouts as documented in rules/x86_64/special-sections.yaml),
 * so a rule is exercised on real compiler output without a kernel tree.
 */
#ifndef KLPDIFF_TEST_KERNEL_H
#define KLPDIFF_TEST_KERNEL_H

#include "kernel-common.h"

/* struct bug_entry, relative pointers with BUGVERBOSE: 12 bytes */
#define _BUG_FLAGS(flags)                                            \
	asm volatile("1:\tud2\n"                                      \
		     ".pushsection __bug_table,\"aw\"\n"                  \
		     "2:\t.long 1b - .\n"                                 \
		     "\t.long %c0 - .\n"                                  \
		     "\t.word %c1\n"                                      \
		     "\t.word %c2\n"                                      \
		     "\t.org 2b+12\n"                                     \
		     ".popsection" : : "i" (__FILE__), "i" (__LINE__),   \
		     "i" (flags))


/* struct jump_entry, relative: {s32 code; s32 target; long key} */
#define ARCH_JUMP_LABEL_ASM \
	"1: .byte 0x0f,0x1f,0x44,0x00,0x00\n\t" \
	".pushsection __jump_table, \"aw\"\n\t" \
	".balign 8\n\t" \
	".long 1b - ., %l[l_yes] - .\n\t" \
	".quad %c0 - .\n\t" \
	".popsection\n\t"
#define ARCH_KEY_OPERAND(key) "i" (key)

/* struct alt_instr, 6.0+: {s32 instr; s32 repl; u32 ft_flags; u8 instrlen; u8 replacementlen} */
#define ALTERNATIVE(oldinstr, newinstr, feature)                          \
	"661:\n\t" oldinstr "\n662:\n"                                    \
	".pushsection .altinstructions,\"a\"\n"                           \
	" .long 661b - .\n"                                               \
	" .long 6641f - .\n"                                              \
	" .4byte " __stringify(feature) "\n"                              \
	" .byte 662b-661b\n"                                              \
	" .byte 6642f-6641f\n"                                            \
	".popsection\n"                                                   \
	".pushsection .altinstr_replacement, \"ax\"\n"                    \
	"6641:\n\t" newinstr "\n6642:\n"                                  \
	".popsection\n"

/* struct exception_table_entry, 5.17+: {s32 insn; s32 fixup; s32 data} */
#define ARCH_EXTABLE_LOAD_ASM \
	"1: movl (%2), %1\n" \
	"2:\n" \
	".pushsection __ex_table,\"a\"\n" \
	" .balign 4\n" \
	" .long 1b - .\n" \
	" .long 2b - .\n" \
	" .long 0\n" \
	".popsection\n"
#define ARCH_EXTABLE_LOAD_OPERANDS(err, val, p) "+r" (err), "=r" (val) : "r" (p)

/* struct static_call_site: {s32 addr; s32 key} */
#define STATIC_CALL_SITE(name)                                            \
	asm volatile("1: call __SCT__" #name "\n"                         \
		     ".pushsection .static_call_sites,\"a\"\n"            \
		     " .long 1b - .\n"                                    \
		     " .long __SCK__" #name " - .\n"                      \
		     ".popsection\n" ::: "memory", "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11")

/* LOCK_PREFIX: a s32 in .smp_locks per lock prefix */
static __always_inline void atomic_inc(int *v)
{
	asm volatile(".pushsection .smp_locks,\"a\"\n"
		     ".balign 4\n"
		     ".long 671f - .\n"
		     ".popsection\n"
		     "671:\n\tlock; incl %0" : "+m" (*v));
}

/* struct paravirt_patch_site (before 6.8): {u8 *instr; u8 type; u8 len} */
#define PARAVIRT_SITE(type)                                               \
	asm volatile("771: nop; nop\n772:\n"                              \
		     ".pushsection .parainstructions,\"a\"\n"             \
		     " .balign 8\n"                                       \
		     " .quad 771b\n"                                      \
		     " .byte " __stringify(type) "\n"                     \
		     " .byte 772b-771b\n"                                 \
		     ".popsection\n")

/* objtool's ORC: .orc_unwind_ip (s32 to code) parallel to .orc_unwind (6 bytes) */
#define ORC_SITE()                                                        \
	asm volatile("881:\n"                                             \
		     ".pushsection .orc_unwind_ip,\"a\"\n .long 881b - .\n.popsection\n" \
		     ".pushsection .orc_unwind,\"a\"\n .2byte 8, 0, 0x5\n.popsection\n")

/* objtool's call-site lists: s32 per site */
#define RETURN_SITE() asm volatile("991:\n.pushsection .return_sites,\"a\"\n .long 991b - .\n.popsection\n")

/* tracepoint pointers: s32 to struct tracepoint */
#define TRACEPOINT_PTR(tp) asm(".pushsection __tracepoints_ptrs,\"a\"\n .long " #tp " - .\n.popsection\n")

/* static_cpu_has() slow path in .altinstr_aux (4.x-5.x) */
#define CPU_HAS_AUX(label)                                                \
	asm goto("jmp 6f\n"                                               \
		 ".pushsection .altinstr_aux,\"ax\"\n"                    \
		 "6: testb $1, boot_cpu_data+12\n"                        \
		 " jnz %l[" #label "]\n"                                  \
		 " jmp %l[" #label "]\n"                                  \
		 ".popsection\n" : : : : label)

/*
 * Runtime constants as 6.11+ vmlinux code has them (arch/x86/include/asm/runtime-const.h):
 * a placeholder immediate, and an s32 entry pointing at it in runtime_{ptr,shift}_<sym>.
 */
#define runtime_const_ptr(sym) ({                                         \
	typeof(sym) __ret;                                                \
	asm_inline("mov %1,%0\n1:\n"                                      \
		   ".pushsection runtime_ptr_" #sym ",\"a\"\n\t"           \
		   ".long 1b - %c2 - .\n"                                  \
		   ".popsection"                                           \
		   : "=r" (__ret)                                          \
		   : "i" ((unsigned long)0x0123456789abcdefull),           \
		     "i" (sizeof(long)));                                  \
	__ret; })
#define runtime_const_shift_right_32(val, sym) ({                         \
	typeof(0u + (val)) __ret = (val);                                 \
	asm_inline("shrl $12,%k0\n1:\n"                                   \
		   ".pushsection runtime_shift_" #sym ",\"a\"\n\t"         \
		   ".long 1b - 1 - .\n"                                    \
		   ".popsection"                                           \
		   : "+r" (__ret));                                        \
	__ret; })

#include "kernel-sites.h"

#endif
