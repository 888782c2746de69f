/*
 * Call-site helpers every arch header shares, written for klpdiff's tests.
 * The arch header defines the asm (the special-section entry its kernel
 * emits) and the operand constraints, then includes this file:
 *   ARCH_JUMP_LABEL_ASM, ARCH_KEY_OPERAND(key)                  -> __jump_table
 *   ARCH_EXTABLE_LOAD_ASM, ARCH_EXTABLE_LOAD_OPERANDS(e, v, p)  -> __ex_table
 */
#ifndef KLPDIFF_TEST_KERNEL_SITES_H
#define KLPDIFF_TEST_KERNEL_SITES_H

static __always_inline int arch_static_branch(struct static_key *key)
{
	asm goto(ARCH_JUMP_LABEL_ASM : : ARCH_KEY_OPERAND(key) : : l_yes);
	return 0;
l_yes:
	return 1;
}

static __always_inline int get_user_int(const int *p, int *val)
{
	int err = 0;

	asm volatile(ARCH_EXTABLE_LOAD_ASM : ARCH_EXTABLE_LOAD_OPERANDS(err, *val, p));
	return err;
}

#endif
