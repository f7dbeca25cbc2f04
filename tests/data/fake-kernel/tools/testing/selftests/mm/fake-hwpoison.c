/* A stand-in for a selftest that a poisoned page kills: it prints, then dies of SIGBUS. It
 * links its directory's helper (vm_util.c), built against the tree's exported headers. */
#include <signal.h>
#include <stdio.h>

const char *about(void);

int main(void)
{
	printf("TAP version 13\n1..1\n# %s\n", about());
	raise(SIGBUS);
	printf("ok 1 never reached\n");
	return 0;
}
