/* A stand-in for mm/'s vm_util.c: a helper only the directory's Makefile links. */
#include <linux/fake-uapi.h>

const char *about(void)
{
	return FAKE_UAPI_WORDS;
}
