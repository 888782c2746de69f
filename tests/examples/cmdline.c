/*
 * klpdiff's example pair: the same file compiled twice, once with -DPATCHED,
 * the way a kernel object is built before and after a source fix.
 * The fix changes the text /proc/cmdline prints; the unchanged helper stays
 * a reference to the running kernel's copy.
 */
struct seq_file;
extern int seq_printf(struct seq_file *m, const char *fmt, ...);
extern const char *saved_command_line;

__attribute__((noinline)) static int cmdline_len(const char *s)
{
	int n = 0;
	while (s[n])
		n++;
	return n;
}

int cmdline_proc_show(struct seq_file *m, void *v)
{
#ifdef PATCHED
	seq_printf(m, "%s livepatched (%d)\n", saved_command_line, cmdline_len(saved_command_line));
#else
	seq_printf(m, "%s\n", saved_command_line);
#endif
	return cmdline_len(saved_command_line) > 0 ? 0 : -1;
}

int version_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "Linux version 6.12-klpdiff\n");
	return 0;
}
