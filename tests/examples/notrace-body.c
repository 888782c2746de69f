/*
 * A fix to a function with no ftrace site (notrace, as the kernel's `inline` makes a static inline
 * body GCC keeps out of line), reached through a traced caller: klpdiff patches the caller in its
 * place. The mutation fuzzer (tests/fuzz/fuzz.py) corrupts this pair as well as cmdline.c's.
 */
extern int printk(const char *fmt, ...);

static int calls;

static __attribute__((noinline, no_instrument_function)) long body(long x)
{
	calls++;
#ifdef PATCHED
	return x * 3 + 2;
#else
	return x * 3 + 1;
#endif
}

long entry(long x)
{
	printk("entry %ld\n", x);
	return body(x) + 5;
}
