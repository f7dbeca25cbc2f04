/* A stand-in for a selftest that a poisoned page kills: it prints, then dies of SIGBUS. */
#include <signal.h>
#include <stdio.h>

int main(void)
{
	printf("TAP version 13\n1..1\n# about to touch the poisoned page\n");
	raise(SIGBUS);
	printf("ok 1 never reached\n");
	return 0;
}
