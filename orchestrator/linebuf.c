/* Linked into every kselftest program the farm builds (orchestrator/kselftests.py): stdout is
 * line-buffered from the start, so what a program printed before a signal killed it reaches
 * the agent. A pipe is otherwise fully buffered, and a program killed by SIGBUS (as a
 * hwpoison test may well be) loses everything it had printed. */
#include <stdio.h>

__attribute__((constructor)) static void farm_line_buffered(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
}
