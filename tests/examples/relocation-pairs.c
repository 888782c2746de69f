/* Relocations that come in pairs (riscv64): a bug-table entry's `.long 1b - .` is an ADD32 and a SUB32
 * at one offset, and every load of a global is an auipc (PCREL_HI20) whose partner addi or lw
 * (PCREL_LO12) names the auipc's place, not the target. -DPATCHED changes foo's message only;
 * -DSTATIC_COUNTER makes the counter a static of the running kernel. */
extern int printk(const char *fmt, ...);
#ifdef STATIC_COUNTER
static int counter;
#else
extern int counter;
#endif

#define BUG_HERE() asm volatile("1: ebreak\n .pushsection __bug_table,\"aw\"\n .long 1b - .\n .long 0\n" \
                                " .short %0\n .short 0\n .popsection" :: "i"(__LINE__))

int other(int x)
{
	return x * 3;
}

int foo(int x)
{
	if (x > 3)
		BUG_HERE();
	counter += x;
#ifdef PATCHED
	printk("foo: patched %d\n", counter);
#else
	printk("foo: %d\n", counter);
#endif
	return counter;
}

int bar(int x)
{
	if (x > 5)
		BUG_HERE();
	return other(x) + 1;
}
