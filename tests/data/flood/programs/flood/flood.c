/* A guest that floods (test_e2e_sandbox.py): `console` writes its serial console without end,
 * in lines that carry terminal escapes and markup; `agent` writes one line without end to its
 * standard output, the agent channel. Neither stops by itself: the farm must end the guest. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	static const char line[] = "\x1b[2J\x1b]0;pwned\x07<script>alert(1)</script> flood\n";
	char buf[4096];
	int fd, i;

	if (argc > 1 && !strcmp(argv[1], "agent")) {
		memset(buf, 'A', sizeof(buf));
		for (;;)
			if (write(1, buf, sizeof(buf)) < 0)
				return 1;
	}
	for (i = 0; i < (int)sizeof(buf); i++)
		buf[i] = line[i % (sizeof(line) - 1)];
	fd = open("/dev/ttyS0", O_WRONLY | O_NOCTTY);
	if (fd < 0)
		fd = open("/dev/console", O_WRONLY | O_NOCTTY);
	if (fd < 0)
		return 2;
	for (;;)
		if (write(fd, buf, sizeof(buf)) < 0)
			return 1;
}
