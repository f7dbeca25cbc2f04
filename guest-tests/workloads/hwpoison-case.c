// hwpoison-case: get one page of a given kind, poison it with a given injector, touch it,
// and report what happened as JSON lines on the agent channel (fd 3).
//
// Usage: hwpoison-case --kind K --injector I --access A [--dir D] [--timeout S] [--cleanup unpoison]
//        hwpoison-case --kind K --injector I --race ACTION [--rounds N] [--seed S] [--dir D]
//        hwpoison-case --list
//   The page kinds, injectors, access steps and race actions are the tables of the registry
//   below (--list prints them as JSON). The access is one step or a comma-separated list of
//   them, each one way a program meets the page again; a first step of read, write or none
//   is the classic access (access_signal, data), every other step reports a "step" event.
// Host injectors use a handshake on fd 3: the workload emits an "inject-request" event with
// the page's guest-physical address. For SRAO it waits for the host's line; for SRAR it
// spins on the page in user mode until the machine check arrives (an SRAR must hit a
// user-mode access); for SRAR in kernel mode it sleeps in the kernel until the end. On a
// guest with several vCPUs it first pins itself to the one it runs on, and names it in the
// request: the host's machine check must land on that vCPU.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <pthread.h>
#include <sched.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_HWPOISON
#define MADV_HWPOISON 100
#endif
#ifndef MADV_SOFT_OFFLINE
#define MADV_SOFT_OFFLINE 101
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#ifndef MADV_FREE
#define MADV_FREE 8
#endif
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MFD_HUGETLB
#define MFD_HUGETLB 4U
#endif
#ifndef BUS_MCEERR_AR
#define BUS_MCEERR_AR 4
#endif
#ifndef BUS_MCEERR_AO
#define BUS_MCEERR_AO 5
#endif

#define PAGE 4096UL
#define HUGE (2UL << 20)
#define CHAN 3
#define KPF_WRITEBACK 8
#define KPF_BUDDY 10
#define KPF_THP 22
#define KPF_KSM 21
#define KPF_HWPOISON 19
#define MAX_STEPS 16

/* Per thread: a race's racer thread touches pages too, and each catches its own SIGBUS. */
static __thread sigjmp_buf jump;
static __thread volatile sig_atomic_t armed;
struct sig_seen { int signo, code, lsb; uintptr_t addr; };
static __thread volatile struct sig_seen last_sig;
static volatile struct sig_seen early_sig;

static void on_sigbus(int signo, siginfo_t *si, void *uc)
{
	(void)uc;
	if (!armed && si->si_code == BUS_MCEERR_AO) {
		/* an early kill: advisory, delivered outside any access; note it and go on */
		early_sig.signo = signo;
		early_sig.code = si->si_code;
		early_sig.addr = (uintptr_t)si->si_addr;
		early_sig.lsb = si->si_addr_lsb;
		return;
	}
	last_sig.signo = signo;
	last_sig.code = si->si_code;
	last_sig.addr = (uintptr_t)si->si_addr;
	last_sig.lsb = si->si_addr_lsb;
	if (armed) {
		armed = 0;
		siglongjmp(jump, 1);
	}
	_exit(99);
}

static int chan = CHAN;

static void emit(const char *fmt, ...)
{
	char buf[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	for (int off = 0; off < n;) {
		ssize_t w = write(chan, buf + off, n - off);
		if (w <= 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		off += w;
	}
}

static void fail(const char *what)
{
	emit("{\"event\":\"setup-error\",\"what\":\"%s\",\"errno\":%d,\"error\":\"%s\"}",
	     what, errno, strerror(errno));
	exit(2);
}

static const char *code_name(int code)
{
	switch (code) {
	case BUS_MCEERR_AR: return "BUS_MCEERR_AR";
	case BUS_MCEERR_AO: return "BUS_MCEERR_AO";
	case BUS_ADRERR: return "BUS_ADRERR";
	case BUS_OBJERR: return "BUS_OBJERR";
	default: return "other";
	}
}

static void sig_json(char *out, size_t len, int got, int code, uintptr_t addr, int lsb,
		     uintptr_t page)
{
	if (!got) {
		snprintf(out, len, "null");
		return;
	}
	snprintf(out, len, "{\"code\":\"%s\",\"addr_is_page\":%s,\"addr_lsb\":%d}",
		 code_name(code), page && (addr & ~(PAGE - 1)) == page ? "true" : "false", lsb);
}

static uint64_t pagemap_entry(void *addr)
{
	uint64_t ent = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0)
		return 0;
	if (pread(fd, &ent, sizeof(ent), ((uintptr_t)addr / PAGE) * sizeof(ent)) != sizeof(ent))
		ent = 0;
	close(fd);
	return ent;
}

static uint64_t pfn_of(void *addr)
{
	uint64_t ent = pagemap_entry(addr);
	if (!(ent & (1ULL << 63)))
		return 0;	/* not present */
	return ent & ((1ULL << 55) - 1);
}

static int swapped(void *addr)
{
	return !!(pagemap_entry(addr) & (1ULL << 62));
}

static uint64_t kpageflags(uint64_t pfn)
{
	uint64_t flags = 0;
	int fd = open("/proc/kpageflags", O_RDONLY);
	if (fd < 0)
		return 0;
	if (pread(fd, &flags, sizeof(flags), pfn * sizeof(flags)) != sizeof(flags))
		flags = 0;
	close(fd);
	return flags;
}

/* A /proc/meminfo field. Only system calls and the stack, no stdio: the SIGBUS handler
 * may siglongjmp out of the wait loops that call this, and a jump out of malloc (inside
 * fopen) leaves the heap broken: the workload once died of SIGSEGV that way. */
static long meminfo(const char *key)
{
	char buf[8192];
	ssize_t n, got = 0;
	int fd = open("/proc/meminfo", O_RDONLY);
	if (fd < 0)
		return -1;
	while (got < (ssize_t)sizeof(buf) - 1 &&
	       (n = read(fd, buf + got, sizeof(buf) - 1 - got)) > 0)
		got += n;
	close(fd);
	buf[got] = 0;
	size_t len = strlen(key);
	for (char *line = buf, *nl; *line; line = nl + 1) {
		if (!strncmp(line, key, len) && line[len] == ':')
			return strtol(line + len + 1, NULL, 10);
		if (!(nl = strchr(line, '\n')))
			break;
	}
	return -1;
}

static long hardware_corrupted_kb(void)
{
	return meminfo("HardwareCorrupted");
}

/* Frames the kernel has marked poisoned (KPF_HWPOISON), all of memory. */
static long poisoned_frames(void)
{
	static uint64_t flags[4096];
	long n = 0;
	ssize_t got;
	off_t off = 0;
	int fd = open("/proc/kpageflags", O_RDONLY);
	if (fd < 0)
		return -1;
	while ((got = pread(fd, flags, sizeof(flags), off)) > 0) {
		for (ssize_t i = 0; i < got / (ssize_t)sizeof(uint64_t); i++)
			n += !!(flags[i] & (1ULL << KPF_HWPOISON));
		off += got;
	}
	close(fd);
	return n;
}

static int write_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0)
		return -errno;
	int r = write(fd, s, strlen(s)) < 0 ? -errno : 0;
	close(fd);
	return r;
}

static int write_num(const char *path, const char *fmt, unsigned long long v)
{
	char s[64];
	snprintf(s, sizeof(s), fmt, v);
	return write_str(path, s);
}

static void fill(unsigned char *p, unsigned seed)
{
	for (unsigned long i = 0; i < PAGE; i++)
		p[i] = (unsigned char)(i * 7 + seed);
}

static const char *check(const unsigned char *p, unsigned seed, int zero_expected)
{
	int zero = 1, same = 1;
	for (unsigned long i = 0; i < PAGE; i++) {
		if (p[i] != (unsigned char)(i * 7 + seed))
			same = 0;
		if (p[i])
			zero = 0;
	}
	if (zero_expected)
		return zero ? "intact" : "changed";
	return same ? "intact" : zero ? "zeroed" : "changed";
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Move to the guest's last vCPU and stay there, and say which: a host SRAR must hit that
 * one (the last, not the first, so that a farm that always injected on vCPU 0 is caught). */
static int pin_here(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	int cpu = n > 1 ? (int)n - 1 : 0;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		return sched_getcpu() < 0 ? 0 : sched_getcpu();
	return sched_getcpu() < 0 ? cpu : sched_getcpu();
}

/* The page under test. */
struct target {
	unsigned char *page;	/* NULL for kinds with no mapping (free-buddy, kernel) */
	uint64_t pfn;
	int fd;			/* the file behind a file-backed kind, or -1 */
	unsigned char *map;	/* the whole mapping the page is in, and its length */
	size_t map_len;
	off_t off;		/* the page's offset in the file */
	int shmid;		/* sysv-shm: the segment, for a new attach; else -1 */
	int zero;		/* the page's original content is zeros (a file hole) */
	pid_t sibling;		/* anon-shared-fork: the child sharing the page */
	int to_sibling, from_sibling;
	const char *note;	/* what the set-up found, for the result */
};

static const unsigned seed = 0x5a;

static unsigned char *map_anon(size_t len)
{
	unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
				-1, 0);
	if (p == MAP_FAILED)
		fail("mmap");
	return p;
}

static unsigned char *map_file(struct target *t, const char *path, int flags, size_t len)
{
	t->fd = open(path, O_RDWR | O_CREAT | O_TRUNC | flags, 0600);
	if (t->fd < 0)
		fail("open");
	if (ftruncate(t->fd, len))
		fail("ftruncate");
	unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, t->fd, 0);
	if (p == MAP_FAILED)
		fail("mmap");
	t->map = p;
	t->map_len = len;
	return p;
}

/* Read the page through a mapping: intact, zeroed, changed, or unreadable (SIGBUS). */
static const char *read_page(unsigned char *page)
{
	static __thread const char *data;
	memset((void *)&last_sig, 0, sizeof(last_sig));
	if (sigsetjmp(jump, 1) == 0) {
		armed = 1;
		data = check(page, seed, 0);
		armed = 0;
	} else {
		data = "unreadable";
	}
	return data;
}

/* The child of anon-shared-fork: waits, touches the shared page, reports its signal. */
static void sibling(unsigned char *page, int in, int out)
{
	char c, buf[128];
	ssize_t n;
	while ((n = read(in, &c, 1)) < 0 && errno == EINTR)
		;	/* an early-kill signal (BUS_MCEERR_AO) interrupts the wait */
	if (n != 1)
		_exit(0);
	const char *data = read_page(page);
	snprintf(buf, sizeof(buf), "%s %s %s\n", early_sig.signo ? code_name(early_sig.code) : "-",
		 last_sig.signo ? code_name(last_sig.code) : "-", data);
	if (write(out, buf, strlen(buf)) < 0)
		_exit(1);
	_exit(0);
}

static void setup_anon(const char *kind, const char *dir, struct target *t)
{
	if (!strcmp(kind, "mlockall") && mlockall(MCL_CURRENT | MCL_FUTURE))
		fail("mlockall");
	t->page = map_anon(PAGE);
	fill(t->page, seed);
	if (!strcmp(kind, "mlocked") && mlock(t->page, PAGE))
		fail("mlock");
	if (!strcmp(kind, "anon-clean") && madvise(t->page, PAGE, MADV_FREE))
		fail("madvise(MADV_FREE)");
}

static void setup_map_locked(const char *kind, const char *dir, struct target *t)
{
	t->page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED, -1, 0);
	if (t->page == MAP_FAILED)
		fail("mmap(MAP_LOCKED)");
	fill(t->page, seed);
}

static void setup_pagecache(const char *kind, const char *dir, struct target *t)
{
	char path[512];
	unsigned char buf[PAGE];
	snprintf(path, sizeof(path), "%s/hwpoison-case.dat", dir);
	t->page = map_file(t, path, 0, PAGE);
	if (!strcmp(kind, "pagecache-clean")) {
		fill(buf, seed);
		if (pwrite(t->fd, buf, PAGE, 0) != PAGE || fsync(t->fd))
			fail("write+fsync");
		(void)*(volatile unsigned char *)t->page;
	} else {
		fill(t->page, seed);
	}
	if (!strcmp(kind, "writeback")) {
		/* start writeback; the throttled disk keeps the page under it */
		if (sync_file_range(t->fd, 0, PAGE, SYNC_FILE_RANGE_WRITE))
			fail("sync_file_range");
	}
}

static void setup_file_hole(const char *kind, const char *dir, struct target *t)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/hwpoison-case.hole", dir);
	t->page = map_file(t, path, 0, 16 * PAGE);
	t->off = 8 * PAGE;
	t->page += t->off;	/* a hole in the middle of a sparse file */
	(void)*(volatile unsigned char *)t->page;
	t->zero = 1;
}

static void setup_shmem(const char *kind, const char *dir, struct target *t)
{
	t->page = map_file(t, "/tmp/hwpoison-case.shm", 0, PAGE);
	fill(t->page, seed);
}

static void setup_memfd(const char *kind, const char *dir, struct target *t)
{
	t->fd = memfd_create("hwpoison-case", 0);
	if (t->fd < 0 || ftruncate(t->fd, PAGE))
		fail("memfd_create");
	t->page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, t->fd, 0);
	if (t->page == MAP_FAILED)
		fail("mmap(memfd)");
	t->map = t->page;
	t->map_len = PAGE;
	fill(t->page, seed);
}

static void setup_sysv_shm(const char *kind, const char *dir, struct target *t)
{
	/* kept until the guest ends, so that a step can attach it again */
	t->shmid = shmget(IPC_PRIVATE, PAGE, IPC_CREAT | 0600);
	if (t->shmid < 0)
		fail("shmget");
	t->page = shmat(t->shmid, NULL, 0);
	if (t->page == (void *)-1)
		fail("shmat");
	fill(t->page, seed);
}

static void setup_swap(const char *kind, const char *dir, struct target *t)
{
	t->page = map_anon(PAGE);
	fill(t->page, seed);
	if (madvise(t->page, PAGE, MADV_PAGEOUT))
		fail("madvise(MADV_PAGEOUT)");
	if (!swapped(t->page)) {
		errno = ENOSPC;
		fail("page not swapped out (no swap device?)");
	}
	/* a read fault brings it back into the swap cache, mapped writable but clean */
	(void)*(volatile unsigned char *)t->page;
	if (!strcmp(kind, "swap-dirty")) {
		/* A write through /proc/self/mem marks the folio dirty (set_page_dirty_lock)
		 * while it stays in the swap cache; a plain store would only dirty the PTE. */
		int mem = open("/proc/self/mem", O_RDWR);
		if (mem < 0 || pwrite(mem, t->page, PAGE, (off_t)(uintptr_t)t->page) != PAGE)
			fail("write /proc/self/mem");
		close(mem);
	}
}

static void setup_thp(const char *kind, const char *dir, struct target *t)
{
	write_str("/sys/kernel/mm/transparent_hugepage/enabled", "always");
	unsigned char *raw = map_anon(2 * HUGE);
	unsigned char *huge = (unsigned char *)(((uintptr_t)raw + HUGE - 1) & ~(HUGE - 1));
	madvise(huge, HUGE, MADV_HUGEPAGE);
	for (unsigned long off = 0; off < HUGE; off += PAGE)
		fill(huge + off, seed);
	t->page = huge + (!strcmp(kind, "thp-tail") ? 5 * PAGE : 0);
	t->map = raw;
	t->map_len = 2 * HUGE;
	if (!(kpageflags(pfn_of(t->page)) & (1ULL << KPF_THP))) {
		errno = ENOMEM;
		fail("no transparent huge page");
	}
}

static void setup_hugetlb(const char *kind, const char *dir, struct target *t)
{
	if (meminfo("HugePages_Free") < 2)	/* a race's rounds set more aside */
		write_str("/proc/sys/vm/nr_hugepages", "2");
	if (!strcmp(kind, "hugetlb-anon")) {
		t->page = mmap(NULL, HUGE, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
	} else {
		t->fd = memfd_create("hwpoison-case", MFD_HUGETLB);
		if (t->fd < 0 || ftruncate(t->fd, HUGE))
			fail("memfd_create(MFD_HUGETLB)");
		t->page = mmap(NULL, HUGE, PROT_READ | PROT_WRITE, MAP_SHARED, t->fd, 0);
		t->map = t->page;
		t->map_len = HUGE;
	}
	if (t->page == MAP_FAILED)
		fail("mmap(hugetlb)");
	t->map = t->page;
	t->map_len = HUGE;
	for (unsigned long off = 0; off < HUGE; off += PAGE)
		fill(t->page + off, seed);
}

static void setup_ksm(const char *kind, const char *dir, struct target *t)
{
	write_str("/sys/kernel/mm/ksm/sleep_millisecs", "10");
	write_str("/sys/kernel/mm/ksm/run", "1");
	unsigned char *two = map_anon(2 * PAGE);
	fill(two, seed);
	fill(two + PAGE, seed);
	if (madvise(two, 2 * PAGE, MADV_MERGEABLE))
		fail("madvise(MADV_MERGEABLE)");
	double end = now() + 20;
	while (pfn_of(two) != pfn_of(two + PAGE) && now() < end)
		usleep(20000);
	if (pfn_of(two) != pfn_of(two + PAGE)) {
		errno = ETIMEDOUT;
		fail("ksmd did not merge the pages");
	}
	t->page = two;
	t->map = two;
	t->map_len = 2 * PAGE;
}

static void setup_anon_shared_fork(const char *kind, const char *dir, struct target *t)
{
	int down[2], up[2];
	t->page = map_anon(PAGE);
	fill(t->page, seed);
	if (pipe(down) || pipe(up))
		fail("pipe");
	t->sibling = fork();
	if (t->sibling < 0)
		fail("fork");
	if (t->sibling == 0) {
		close(down[1]);
		close(up[0]);
		sibling(t->page, down[0], up[1]);
	}
	close(down[0]);
	close(up[1]);
	t->to_sibling = down[1];
	t->from_sibling = up[0];
}

static void setup_free_buddy(const char *kind, const char *dir, struct target *t)
{
	/* the highest head page of a free buddy block: nothing allocates it meanwhile */
	uint64_t flags[512];
	int fd = open("/proc/kpageflags", O_RDONLY);
	ssize_t n;
	for (uint64_t base = 0; fd >= 0 && (n = pread(fd, flags, sizeof(flags),
				base * sizeof(uint64_t))) > 0; base += n / sizeof(uint64_t))
		for (ssize_t i = 0; i < n / (ssize_t)sizeof(uint64_t); i++)
			if (flags[i] & (1ULL << KPF_BUDDY))
				t->pfn = base + i;
	if (fd >= 0)
		close(fd);
	if (!t->pfn) {
		errno = ENOENT;
		fail("no free buddy page in /proc/kpageflags");
	}
}

static void setup_vdso(const char *kind, const char *dir, struct target *t)
{
	/* A page of the kernel's own image that every process maps: the vDSO. Its last
	 * page, code: its first holds the ELF header that every new program reads. */
	unsigned char *v = (unsigned char *)getauxval(AT_SYSINFO_EHDR);
	char line[256];
	unsigned long start, end, len = PAGE;
	FILE *f = fopen("/proc/self/maps", "r");
	while (f && fgets(line, sizeof(line), f))
		if (strstr(line, "[vdso]") && sscanf(line, "%lx-%lx", &start, &end) == 2)
			len = end - start;
	if (f)
		fclose(f);
	if (!v) {
		errno = ENOENT;
		fail("no vDSO (AT_SYSINFO_EHDR)");
	}
	t->page = v + len - PAGE;
	(void)*(volatile unsigned char *)t->page;	/* mapped, for its PFN */
}

static void setup_kernel(const char *kind, const char *dir, struct target *t)
{
	/* a page of kernel text, from /proc/iomem (real addresses for root) */
	char line[256];
	unsigned long start = 0, end;
	FILE *f = fopen("/proc/iomem", "r");
	while (f && fgets(line, sizeof(line), f))
		if (strstr(line, "Kernel code") && sscanf(line, " %lx-%lx", &start, &end) == 2)
			break;
	if (f)
		fclose(f);
	if (!start) {
		errno = ENOENT;
		fail("no 'Kernel code' in /proc/iomem");
	}
	t->pfn = start / PAGE + 16;
}

/* ---- the registry: page kinds, injectors, access steps and race actions, declared once ----
 * Each is a table below: a row names the thing, the function that does it and its flags,
 * and the flags' names are tables too. `hwpoison-case --list` prints the registry as JSON;
 * orchestrator/registry.py reads the same tables from this file, and tests/test_registry.py
 * holds the two and the scenario docs to one another. */

struct flag_name { unsigned flag; const char *name; };
#define N(a) (sizeof(a) / sizeof((a)[0]))

/* The row of a table whose name is `name`, or NULL: every row of every table begins with it. */
static const void *row_of(const void *rows, size_t n, size_t size, const char *name)
{
	for (size_t i = 0; i < n; i++) {
		const char *const *row = (const void *)((const char *)rows + i * size);
		if (!strcmp(*row, name))
			return row;
	}
	return NULL;
}
#define ROW_OF(table, name) row_of(table, N(table), sizeof((table)[0]), name)

/* ---- page kinds: one row each, with the function that sets the page up ---- */
#define K_DISK 1	/* the page is on the ext2 disk (/mnt) */
#define K_SWAP 2	/* it needs a swap device */
#define K_UNMAPPED 4	/* no mapping: only a PFN, nothing to touch afterwards */
#define K_UNTOUCHED 8	/* mapped but not the workload's own (the vDSO): never touched */
#define K_FILE 16	/* a file is behind it: every access step applies */
#define K_RACE 32	/* race mode sets it up afresh each round */
#define K_HUGETLB 64	/* a page of the hugetlb pool, which a poisoned one leaves when freed */
#define K_THP 128	/* a transparent huge page */
#define K_SEGMENT 256	/* a SysV segment: no file, but it can be attached again */

static const struct flag_name kind_flags[] = {
	{K_DISK, "disk"}, {K_SWAP, "swap"}, {K_UNMAPPED, "unmapped"}, {K_UNTOUCHED, "untouched"},
	{K_FILE, "file"}, {K_RACE, "race"}, {K_HUGETLB, "hugetlb"}, {K_THP, "thp"},
	{K_SEGMENT, "segment"},
};

typedef void setup_fn(const char *kind, const char *dir, struct target *t);

static const struct kind {
	const char *name;
	setup_fn *setup;
	unsigned flags;
} kinds[] = {
	{"anon", setup_anon, K_RACE},
	{"anon-clean", setup_anon, 0},
	{"mlocked", setup_anon, 0},
	{"map-locked", setup_map_locked, 0},
	{"mlockall", setup_anon, 0},
	{"pagecache-clean", setup_pagecache, K_DISK | K_FILE | K_RACE},
	{"pagecache-dirty", setup_pagecache, K_DISK | K_FILE | K_RACE},
	{"file-hole", setup_file_hole, K_DISK | K_FILE},
	{"shmem", setup_shmem, K_FILE | K_RACE},
	{"memfd", setup_memfd, K_FILE | K_RACE},
	{"sysv-shm", setup_sysv_shm, K_SEGMENT},
	{"swap-clean", setup_swap, K_SWAP | K_RACE},
	{"swap-dirty", setup_swap, K_SWAP | K_RACE},
	{"thp-head", setup_thp, K_THP | K_RACE},
	{"thp-tail", setup_thp, K_THP | K_RACE},
	{"hugetlb-anon", setup_hugetlb, K_HUGETLB | K_RACE},
	{"hugetlb-file", setup_hugetlb, K_HUGETLB | K_FILE | K_RACE},
	{"ksm", setup_ksm, K_RACE},
	{"anon-shared-fork", setup_anon_shared_fork, 0},
	{"writeback", setup_pagecache, K_DISK | K_FILE},
	{"free-buddy", setup_free_buddy, K_UNMAPPED | K_UNTOUCHED},
	{"kernel", setup_kernel, K_UNMAPPED | K_UNTOUCHED},
	{"vdso", setup_vdso, K_UNTOUCHED},
};

static const struct kind *kind_of(const char *name)
{
	return ROW_OF(kinds, name);
}

static void setup(const char *kind, const char *dir, struct target *t)
{
	const struct kind *k = kind_of(kind);
	t->fd = -1;
	t->shmid = -1;
	if (!k) {
		errno = EINVAL;
		fail("unknown kind");
	}
	k->setup(kind, dir, t);
	if (t->page)
		t->pfn = pfn_of(t->page);
}

static int sysfs_offline(const char *which, uint64_t pfn)
{
	char path[128];
	snprintf(path, sizeof(path), "/sys/devices/system/memory/%s_offline_page", which);
	return write_num(path, "%#llx\n", pfn * PAGE);
}

static int mce_inject(uint64_t pfn)
{
	const char *d = "/sys/kernel/debug/mce-inject";
	char path[128];
	int r;
#define MCE_FILE(name, fmt, val) \
	(snprintf(path, sizeof(path), "%s/" name, d), write_num(path, fmt, val))
	if ((r = write_str("/sys/kernel/debug/mce-inject/flags", "sw\n")) ||
	    (r = MCE_FILE("status", "%#llx\n", 0xbd000000000000c0ULL)) ||
	    (r = MCE_FILE("misc", "%#llx\n", 0x8cULL)) ||
	    (r = MCE_FILE("addr", "%#llx\n", pfn * PAGE)) ||
	    (r = MCE_FILE("bank", "%llu\n", 9ULL)))
		return r;
	return 0;
#undef MCE_FILE
}

/* ---- injectors: one row each, with the function that poisons the case's page ----
 * A host injector's row says which machine check the host injects at the page's
 * guest-physical address, and where the vCPU must be when it lands. */
#define I_HOST 1	/* injected by the host over QMP, at the page's guest-physical address */
#define I_SYNC 2	/* over when its call returns: a race can use it */
#define I_SRAO 4	/* the host's machine check is action optional (SRAO) */
#define I_SRAR 8	/* action required (SRAR): it lands while the vCPU runs the workload in user mode */
#define I_KERNEL 16	/* ... or, with this, while the vCPU is in the kernel (the guest must panic) */

static const struct flag_name injector_flags[] = {
	{I_HOST, "host"}, {I_SYNC, "synchronous"}, {I_SRAO, "srao"}, {I_SRAR, "srar"},
	{I_KERNEL, "in_kernel"},
};

static int timeout_s = 20;	/* --timeout: how long a host injection may take to arrive */

struct injector;
/* Poison t's page (hc_before: HardwareCorrupted before): the errno, 0 on success. A SIGBUS
 * it raises leaves it by siglongjmp. */
typedef int inject_fn(const struct injector *inj, struct target *t, long hc_before);

struct injector {
	const char *name;
	inject_fn *inject;
	unsigned flags;
};

static int inject_madvise(const struct injector *inj, struct target *t, long hc_before)
{
	int advice = strcmp(inj->name, "madvise") ? MADV_SOFT_OFFLINE : MADV_HWPOISON;
	return madvise(t->page, PAGE, advice) ? errno : 0;
}

static int inject_corrupt_pfn(const struct injector *inj, struct target *t, long hc_before)
{
	return -write_num("/sys/kernel/debug/hwpoison/corrupt-pfn", "%#llx\n", t->pfn);
}

static int inject_offline(const struct injector *inj, struct target *t, long hc_before)
{
	return -sysfs_offline(strncmp(inj->name, "hard", 4) ? "soft" : "hard", t->pfn);
}

/* Wait until the kernel counts the poison: a logged record (mce-inject) or an SRAO is
 * handled from a work queue, after its injection returned. */
static void wait_counted(long hc_before, double seconds)
{
	double end = now() + seconds;
	while (hardware_corrupted_kb() == hc_before && now() < end)
		usleep(20000);
}

static int inject_mce(const struct injector *inj, struct target *t, long hc_before)
{
	int r = mce_inject(t->pfn);
	wait_counted(hc_before, 1);
	return -r;
}

/* Ask the host to inject at the page's guest-physical address, from this vCPU: the host
 * finds the machine check in the injector's row. */
static void request_host(const struct injector *inj, struct target *t)
{
	emit("{\"event\":\"inject-request\",\"injector\":\"%s\",\"gpa\":\"%#llx\",\"cpu\":%d}",
	     inj->name, (unsigned long long)(t->pfn * PAGE), pin_here());
}

static int inject_host_srao(const struct injector *inj, struct target *t, long hc_before)
{
	char line[64] = "";
	request_host(inj, t);
	if (read(chan, line, sizeof(line) - 1) <= 0)
		fail("handshake");
	wait_counted(hc_before, timeout_s);
	return 0;
}

static int inject_host_srar(const struct injector *inj, struct target *t, long hc_before)
{
	double end = now() + timeout_s;
	unsigned long sum = 0;
	request_host(inj, t);
	/* A clean page may be dropped without a signal and read back into a new frame: stop
	 * spinning when the PFN changes. */
	while (now() < end && pfn_of(t->page) == t->pfn)
		for (long i = 0; i < (1L << 20); i++)
			sum += ((volatile unsigned char *)t->page)[i & (PAGE - 1)];
	return pfn_of(t->page) == t->pfn ? ETIMEDOUT : 0;
}

static int inject_host_srar_kernel(const struct injector *inj, struct target *t, long hc_before)
{
	request_host(inj, t);
	sleep(timeout_s);	/* in the kernel: the host injects while the CPU is at CPL 0 */
	return ETIMEDOUT;
}

static int inject_none(const struct injector *inj, struct target *t, long hc_before)
{
	return 0;
}

static const struct injector injectors[] = {
	{"madvise", inject_madvise, I_SYNC},
	{"madvise-soft", inject_madvise, I_SYNC},
	{"corrupt-pfn", inject_corrupt_pfn, I_SYNC},
	{"hard-offline", inject_offline, I_SYNC},
	{"soft-offline", inject_offline, I_SYNC},
	{"mce-inject", inject_mce, 0},
	{"host-srao", inject_host_srao, I_HOST | I_SRAO},
	{"host-srar", inject_host_srar, I_HOST | I_SRAR},
	{"host-srar-kernel", inject_host_srar_kernel, I_HOST | I_SRAR | I_KERNEL},
};

/* "none" (a selftest's or a setup-only case) poisons nothing; it is not in the registry. */
static const struct injector no_injector = {"none", inject_none, I_SYNC};

static const struct injector *injector_of(const char *name)
{
	const struct injector *inj = ROW_OF(injectors, name);
	return inj || strcmp(name, "none") ? inj : &no_injector;
}

/* Poison t's page with a synchronous injector (a race's, or a second poisoning): the errno,
 * 0 on success. */
static int poison_once(const char *name, struct target *t)
{
	const struct injector *inj = injector_of(name);
	return inj && inj->flags & I_SYNC ? inj->inject(inj, t, 0) : EINVAL;
}

/* ---- access steps: one row each, one way a program meets the page again ---- */

/* What the page should hold now: the pattern of the last write, or zeros (a hole). */
static unsigned cur_seed = 0x5a;
static int cur_zero;

/* One step's observables. Static: they live across siglongjmp out of a touch. */
static struct {
	int sig, code, lsb;
	const char *data;
	int err;	/* errno of the step's system call, 0 on success, -1 when it made none */
	long bytes;	/* bytes of pread/pwrite, LONG_MIN when none */
} so;

static void step_reset(void)
{
	so.sig = so.code = so.lsb = 0;
	so.data = "unchecked";
	so.err = -1;
	so.bytes = -999999;
}

/* Read (or write) the page through a mapping, catching the SIGBUS a poisoned page gives. */
static void touch(unsigned char *page, int write, int zero_check)
{
	memset((void *)&last_sig, 0, sizeof(last_sig));
	if (sigsetjmp(jump, 1) == 0) {
		armed = 1;
		if (write) {
			fill(page, seed + 1);
			armed = 0;
			so.data = "written";
			cur_seed = seed + 1;
			cur_zero = 0;
		} else {
			so.data = check(page, cur_seed, zero_check);
			armed = 0;
		}
	} else {
		so.sig = 1;
		so.code = last_sig.code;
		so.lsb = last_sig.lsb;
		so.data = "unreadable";
	}
}

static void emit_step(const char *name)
{
	char sig[48] = "null", lsb[16] = "null", err[16] = "null", bytes[24] = "null";
	if (so.sig) {
		snprintf(sig, sizeof(sig), "\"%s\"", code_name(so.code));
		snprintf(lsb, sizeof(lsb), "%d", so.lsb);
	}
	if (so.err >= 0)
		snprintf(err, sizeof(err), "%d", so.err);
	if (so.bytes != -999999)
		snprintf(bytes, sizeof(bytes), "%ld", so.bytes);
	emit("{\"event\":\"step\",\"step\":\"%s\",\"signal\":%s,\"si_addr_lsb\":%s,"
	     "\"data\":\"%s\",\"errno\":%s,\"bytes\":%s}", name, sig, lsb, so.data, err, bytes);
}

/* munmap the page's mapping and map the same file (or attach the same segment) again. */
static int remap(struct target *t)
{
	if (t->shmid >= 0) {
		if (shmdt(t->page))
			return errno;
		void *p = shmat(t->shmid, NULL, 0);
		if (p == (void *)-1)
			return errno;
		t->page = p;
		return 0;
	}
	if (munmap(t->map, t->map_len))
		return errno;
	unsigned char *p = mmap(NULL, t->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, t->fd, 0);
	if (p == MAP_FAILED)
		return errno;
	t->map = p;
	t->page = p + t->off;
	return 0;
}

/* In a forked child: map the page again (the file, the segment, or what it inherited),
 * touch it and say on the pipe what it saw. */
static void child_side(struct target *t, int out)
{
	char buf[128] = "";
	unsigned char *p = t->page;
	step_reset();
	if (t->fd >= 0) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/self/fd/%d", t->fd);
		int fd = open(path, O_RDONLY);
		p = fd < 0 ? MAP_FAILED : mmap(NULL, t->map_len, PROT_READ, MAP_SHARED, fd, 0);
		p = p == MAP_FAILED ? NULL : p + t->off;
	} else if (t->shmid >= 0) {
		p = shmat(t->shmid, NULL, SHM_RDONLY);
		p = p == (void *)-1 ? NULL : p;
	}
	if (p)
		touch(p, 0, cur_zero);
	snprintf(buf, sizeof(buf), "%d %d %s %d\n", so.sig ? so.code : 0, so.lsb, so.data,
		 p ? 0 : errno);
	if (write(out, buf, strlen(buf)) < 0)
		_exit(1);
	_exit(0);
}

/* Run fn in a forked child, which says what it has to say on a pipe (fn writes to `out`):
 * what it wrote, NUL-terminated, into buf, and its wait status. Returns the bytes it wrote
 * (0 when it said nothing), or -1 with errno when there is no child. */
static ssize_t in_child(void (*fn)(void *arg, int out), void *arg, char *buf, size_t len,
			int *status)
{
	int fds[2];
	if (pipe(fds))
		return -1;
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		close(fds[0]);
		fn(arg, fds[1]);
		_exit(0);
	}
	close(fds[1]);
	ssize_t n;
	while ((n = read(fds[0], buf, len - 1)) < 0 && errno == EINTR)
		;
	n = n > 0 ? n : 0;
	buf[n] = 0;
	close(fds[0]);
	while (waitpid(pid, status, 0) < 0 && errno == EINTR)
		;
	return n;
}

static void child_side_of(void *arg, int out)
{
	child_side(arg, out);
}

/* A new process meets the page: it opens and maps the file (or attaches the segment), or,
 * for anonymous kinds, touches what it inherited. It reports on a pipe. */
static void child_read(struct target *t)
{
	int status = 0;
	char buf[128] = "";
	ssize_t n = in_child(child_side_of, t, buf, sizeof(buf), &status);
	if (n < 0) {
		so.err = errno;
		return;
	}
	static char data[32];
	int code = 0, lsb = 0, err = 0;
	if (n > 0 && sscanf(buf, "%d %d %31s %d", &code, &lsb, data, &err) == 4) {
		so.sig = code != 0;
		so.code = code;
		so.lsb = lsb;
		so.data = data;
		so.err = err ? err : -1;
	} else {
		so.data = WIFSIGNALED(status) ? "child-killed" : "unchecked";
	}
}

/* The errno of an fsync step: fsync_errno, the error "a later fsync" reports, is then that
 * one (an error is reported once per open file, so a second fsync would say 0). */
static int fsync_step_errno = -1;
static unsigned char step_buf[PAGE];	/* what pread reads into and pwrite writes from */

#define S_CLASSIC 1	/* read or write: as the first step, the classic access (access_signal, data) */
#define S_MAPPING 2	/* every kind with a mapping takes it (without: only a kind with a file) */
#define S_SEGMENT 4	/* a SysV segment takes it too (attached again) */

static const struct flag_name step_flags[] = {
	{S_CLASSIC, "classic"}, {S_MAPPING, "mapping"}, {S_SEGMENT, "segment"},
};

struct step;
typedef void step_fn(const struct step *s, struct target *t);

struct step {
	const char *name;
	step_fn *run;
	unsigned flags;
};

static void step_touch(const struct step *s, struct target *t)
{
	touch(t->page, s->name[0] == 'w', cur_zero);
}

static void step_remap(const struct step *s, struct target *t)
{
	so.err = remap(t);
	if (!so.err)
		touch(t->page, !strcmp(s->name, "remap-write"), cur_zero);
}

static void step_private_read(const struct step *s, struct target *t)
{
	unsigned char *p = mmap(NULL, t->map_len, PROT_READ, MAP_PRIVATE, t->fd, 0);
	so.err = p == MAP_FAILED ? errno : 0;
	if (!so.err) {
		touch(p + t->off, 0, cur_zero);
		munmap(p, t->map_len);
	}
}

static void step_pread(const struct step *s, struct target *t)
{
	ssize_t n = pread(t->fd, step_buf, PAGE, t->off);
	so.err = n < 0 ? errno : 0;
	so.bytes = n;
	so.data = n == (ssize_t)PAGE ? check(step_buf, cur_seed, cur_zero) :
		  n < 0 ? "unreadable" : "short";
}

static void step_pwrite(const struct step *s, struct target *t)
{
	fill(step_buf, seed + 2);
	ssize_t n = pwrite(t->fd, step_buf, PAGE, t->off);
	so.err = n < 0 ? errno : 0;
	so.bytes = n;
	if (n == (ssize_t)PAGE) {
		so.data = "written";
		cur_seed = seed + 2;
		cur_zero = 0;
	}
}

static void step_child_read(const struct step *s, struct target *t)
{
	child_read(t);
}

static void step_populate_read(const struct step *s, struct target *t)
{
	memset((void *)&last_sig, 0, sizeof(last_sig));
	if (sigsetjmp(jump, 1) == 0) {
		armed = 1;
		so.err = madvise(t->page, PAGE, MADV_POPULATE_READ) ? errno : 0;
		armed = 0;
	} else {
		so.sig = 1;
		so.code = last_sig.code;
		so.lsb = last_sig.lsb;
	}
}

static void step_after_drop_caches(const struct step *s, struct target *t)
{
	sync();
	so.err = -write_str("/proc/sys/vm/drop_caches", "3\n");
	touch(t->page, 0, cur_zero);
}

static void step_truncate_extend(const struct step *s, struct target *t)
{
	so.err = ftruncate(t->fd, t->off) || ftruncate(t->fd, t->map_len) ? errno : 0;
	/* data: "zeroed" when the page now reads as the hole truncation leaves */
	touch(t->page, 0, 0);
	if (!so.err)
		cur_zero = 1;
}

static void step_fsync(const struct step *s, struct target *t)
{
	so.err = fsync(t->fd) ? errno : 0;
	fsync_step_errno = so.err;
}

/* In the order the scenario docs list them. */
static const struct step steps[] = {
	{"read", step_touch, S_CLASSIC | S_MAPPING},
	{"write", step_touch, S_CLASSIC | S_MAPPING},
	{"remap-read", step_remap, S_SEGMENT},
	{"remap-write", step_remap, S_SEGMENT},
	{"private-read", step_private_read, 0},
	{"pread", step_pread, 0},
	{"pwrite", step_pwrite, 0},
	{"child-read", step_child_read, S_MAPPING},
	{"populate-read", step_populate_read, S_MAPPING},
	{"after-drop-caches", step_after_drop_caches, S_MAPPING},
	{"truncate-extend", step_truncate_extend, 0},
	{"fsync", step_fsync, 0},
};

static const struct step *step_of(const char *name)
{
	return ROW_OF(steps, name);
}

static void run_step(const struct step *s, struct target *t)
{
	step_reset();
	s->run(s, t);
	emit_step(s->name);
}

/* ---- race mode: poison a page while another thread does something to it ----
 *
 * --race ACTION --rounds N --seed S: N rounds, each on a page of its own set up afresh. In
 * each, the workload (on the last vCPU) poisons the page with its injector while a racer
 * thread (on vCPU 0) does ACTION to it; a barrier releases both at once and a delay drawn
 * from the seed holds one of them back, so the rounds walk over the orders the two can take.
 * After both, the workload reads the page (and, for an action that unpoisons, unpoisons it
 * if it is still poisoned) and reports the round as raw facts: the host judges them. */
#define RACE_BITS 22	/* a delay is up to 2^21 spins, log-uniform: short ones as often as long */

struct action;

static struct race {
	const struct action *action;
	struct target *t;
	unsigned delay;		/* the racer's, this round */
	int err;		/* errno of the racer's action, 0 on success, -1 when none */
	int unmapped;		/* the racer unmapped the page's mapping */
	char child[32];		/* fork: what the child read of the page */
	int stop;
	int spin_wait;		/* two vCPUs or more: wait by spinning, not by yielding */
	/* Round numbers, one flag each: the racer is ready, it may go, it is done. Spinning on
	 * them, not a futex barrier: a sleeping thread's wake-up takes longer on TCG than the
	 * races themselves, and would decide every round the same way. */
	int ready, go, done;
} race;

static void spin(unsigned n)
{
	for (volatile unsigned i = 0; i < n; i++)
		;
}

static void wait_for(int *flag, int value)
{
	while (__atomic_load_n(flag, __ATOMIC_ACQUIRE) != value)
		if (!race.spin_wait)
			sched_yield();	/* one vCPU: let the other thread run */
}

static void set_flag(int *flag, int value)
{
	__atomic_store_n(flag, value, __ATOMIC_RELEASE);
}

static void pin_to(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);	/* a one-vCPU guest: stays where it is */
}

/* ---- race actions: one row each, with the function the racer runs ---- */
#define R_FILE 1	/* it needs a file behind the page */
#define R_HOLES 2	/* ... on a file system that punches holes (not the ext2 disk) */
#define R_NOT_HUGETLB 4	/* not for a hugetlb page (MADV_PAGEOUT leaves those alone) */
#define R_CUTS 8	/* it cuts the page out of its file: the round may read zeros */
#define R_UNPOISONS 16	/* it unpoisons the frame: the workload unpoisons what is left after
			 * the round, and counts the poisoned frames again */

static const struct flag_name action_flags[] = {
	{R_FILE, "file"}, {R_HOLES, "holes"}, {R_NOT_HUGETLB, "not_hugetlb"}, {R_CUTS, "cuts"},
	{R_UNPOISONS, "unpoisons"},
};

/* The racer's action on r's page: the errno, 0 on success. */
typedef int action_fn(struct race *r);

struct action {
	const char *name;
	action_fn *run;
	unsigned flags;
};

static int race_truncate(struct race *r)	/* to the page's offset, and back to the old size */
{
	struct target *t = r->t;
	return ftruncate(t->fd, t->off) || ftruncate(t->fd, t->map_len) ? errno : 0;
}

static int race_punch_hole(struct race *r)
{
	struct target *t = r->t;
	size_t unit = t->map_len >= HUGE && t->fd >= 0 ? HUGE : PAGE;	/* hugetlb-file */
	return fallocate(t->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			 t->off & ~(off_t)(unit - 1), unit) ? errno : 0;
}

static int race_munmap(struct race *r)
{
	struct target *t = r->t;
	int err = munmap(t->map ? t->map : t->page, t->map ? t->map_len : PAGE) ? errno : 0;
	r->unmapped = !err;
	return err;
}

static void say_what_it_reads(void *page, int out)
{
	const char *d = read_page(page);
	if (write(out, d, strlen(d)) < 0)
		_exit(1);
}

/* fork: a child reads the page while it is being poisoned, and says what it read. */
static int race_fork(struct race *r)
{
	int status;
	ssize_t n = in_child(say_what_it_reads, r->t->page, r->child, sizeof(r->child), &status);
	if (n < 0)
		return errno;
	if (n == 0)
		snprintf(r->child, sizeof(r->child), "child-killed");
	return 0;
}

static int race_pageout(struct race *r)
{
	return madvise(r->t->page, PAGE, MADV_PAGEOUT) ? errno : 0;
}

static int race_compact(struct race *r)
{
	return -write_str("/proc/sys/vm/compact_memory", "1\n");
}

static int race_poison2(struct race *r)	/* corrupt-pfn of the same page at once */
{
	return poison_once("corrupt-pfn", r->t);
}

static int race_unpoison(struct race *r)
{
	return -write_num("/sys/kernel/debug/hwpoison/unpoison-pfn", "%#llx\n", r->t->pfn);
}

static int race_soft_offline(struct race *r)
{
	return poison_once("soft-offline", r->t);
}

static const struct action actions[] = {
	{"truncate", race_truncate, R_FILE | R_CUTS},
	{"punch-hole", race_punch_hole, R_FILE | R_HOLES | R_CUTS},
	{"munmap", race_munmap, 0},
	{"fork", race_fork, 0},
	{"pageout", race_pageout, R_NOT_HUGETLB},
	{"compact", race_compact, 0},
	{"poison2", race_poison2, 0},
	{"unpoison", race_unpoison, R_UNPOISONS},
	{"soft-offline", race_soft_offline, 0},
};

static const struct action *action_of(const char *name)
{
	return ROW_OF(actions, name);
}

static void *racer(void *arg)
{
	struct race *r = arg;
	pin_to(0);
	for (int round = 1;; round++) {
		set_flag(&r->ready, round);
		wait_for(&r->go, round);
		if (r->stop)
			return NULL;
		spin(r->delay);
		r->err = r->action->run(r);
		set_flag(&r->done, round);
	}
}

/* Undo setup() before the next round: unmap what it mapped (unless the racer did), close
 * and empty its file. */
static void teardown(struct target *t, int unmapped)
{
	if (!unmapped && t->page)
		munmap(t->map ? t->map : t->page, t->map ? t->map_len : PAGE);
	if (t->fd >= 0) {
		if (ftruncate(t->fd, 0))
			;	/* memfd and hugetlb files go with their descriptor anyway */
		close(t->fd);
	}
}

/* One round's state. Static: it lives across siglongjmp out of the poisoning. */
static struct round {
	struct target t;
	unsigned rs;		/* the seed's state */
	int n, err, sig;	/* the round's number; the injector's errno and signal */
	unsigned delay, main_delay;
	int racer_waits;
	long frames, frames0, hc0;	/* poisoned frames now and before, HardwareCorrupted before */
	const char *data;	/* what a program reads of the page after the round */
} rd = { .frames = -1 };

/* The round's page, set up afresh, and who waits how long. */
static void round_begin(const struct kind *k, const char *dir, int rescan)
{
	memset(&rd.t, 0, sizeof(rd.t));
	setup(k->name, dir, &rd.t);
	race.t = &rd.t;
	race.unmapped = 0;
	race.err = -1;
	race.child[0] = 0;
	rd.delay = rand_r(&rd.rs) % (1U << (rand_r(&rd.rs) % RACE_BITS));
	rd.racer_waits = rand_r(&rd.rs) & 1;
	race.delay = rd.racer_waits ? rd.delay : 0;
	rd.main_delay = rd.racer_waits ? 0 : rd.delay;
	/* The frames poisoned before the round: as the last round left them, unless its
	 * end may have changed them (an unpoison, a huge page dissolved when freed). */
	rd.hc0 = hardware_corrupted_kb();
	if (rescan && rd.n > 0)
		rd.frames = poisoned_frames();
	rd.frames0 = rd.frames;
}

/* Release the racer, poison the page at the same time, and wait for the racer. */
static void round_poison(const char *injector)
{
	wait_for(&race.ready, rd.n + 1);
	set_flag(&race.go, rd.n + 1);
	spin(rd.main_delay);
	memset((void *)&last_sig, 0, sizeof(last_sig));
	rd.err = -1;
	rd.sig = 0;
	if (sigsetjmp(jump, 1) == 0) {
		armed = 1;
		rd.err = poison_once(injector, &rd.t);
		armed = 0;
	} else {
		rd.sig = last_sig.code;
	}
	wait_for(&race.done, rd.n + 1);
	/* what a program reads of the page now: through a new mapping if it is gone */
	rd.data = "unchecked";
	if (!race.unmapped) {
		rd.data = read_page(rd.t.page);
	} else if (rd.t.fd >= 0) {
		unsigned char *p = mmap(NULL, rd.t.map_len, PROT_READ, MAP_SHARED, rd.t.fd, 0);
		if (p != MAP_FAILED) {
			rd.data = read_page(p + rd.t.off);
			munmap(p, rd.t.map_len);
		}
	}
}

/* The round's raw facts: what was counted, what is still poisoned, what each side got. */
static void round_report(const struct action *act)
{
	long hc1 = hardware_corrupted_kb(), frames1 = rd.frames = poisoned_frames();
	int poisoned = !!(kpageflags(rd.t.pfn) & (1ULL << KPF_HWPOISON));
	int unpoison_errno = -1;
	if (act->flags & R_UNPOISONS && poisoned)
		unpoison_errno = -write_num("/sys/kernel/debug/hwpoison/unpoison-pfn",
					    "%#llx\n", rd.t.pfn);
	long hc2 = hardware_corrupted_kb();
	int poisoned_after = !!(kpageflags(rd.t.pfn) & (1ULL << KPF_HWPOISON));
	char child[48] = "null";
	if (race.child[0])
		snprintf(child, sizeof(child), "\"%s\"", race.child);
	emit("{\"event\":\"race-round\",\"round\":%d,\"racer_delayed\":%s,\"delay\":%u,"
	     "\"inject_errno\":%d,\"inject_signal\":%s%s%s,\"racer_errno\":%d,"
	     "\"data\":\"%s\",\"child_data\":%s,\"hc_delta\":%ld,\"frames_delta\":%ld,"
	     "\"poisoned\":%s,"
	     "\"unpoison_errno\":%d,\"hc_delta_end\":%ld,\"poisoned_end\":%s}",
	     rd.n, rd.racer_waits ? "true" : "false", rd.delay, rd.err, rd.sig ? "\"" : "",
	     rd.sig ? code_name(rd.sig) : "null", rd.sig ? "\"" : "", race.err, rd.data, child,
	     hc1 - rd.hc0, frames1 - rd.frames0, poisoned ? "true" : "false", unpoison_errno,
	     hc2 - rd.hc0, poisoned_after ? "true" : "false");
}

static int race_main(const struct kind *k, const char *injector, const struct action *act,
		     const char *dir, int rounds, unsigned seed_arg)
{
	int rescan = act->flags & R_UNPOISONS || k->flags & K_HUGETLB;
	pthread_t th;
	rd.rs = seed_arg;
	race.action = act;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	double t0 = now();
	rd.frames = poisoned_frames();	/* what one scan costs is in the race's event */
	emit("{\"event\":\"race\",\"kind\":\"%s\",\"injector\":\"%s\",\"action\":\"%s\","
	     "\"rounds\":%d,\"seed\":%u,\"cpus\":%ld,\"scan_ms\":%.1f}", k->name, injector,
	     act->name, rounds, seed_arg, ncpu, (now() - t0) * 1e3);
	pin_here();
	race.spin_wait = ncpu > 1;
	if (k->flags & K_HUGETLB)	/* a poisoned huge page leaves the pool: one a round */
		write_num("/proc/sys/vm/nr_hugepages", "%llu", (unsigned long long)rounds + 2);
	if ((errno = pthread_create(&th, NULL, racer, &race)))
		fail("pthread_create");
	for (rd.n = 0; rd.n < rounds; rd.n++) {
		round_begin(k, dir, rescan);
		round_poison(injector);
		round_report(act);
		teardown(&rd.t, race.unmapped);
	}
	wait_for(&race.ready, rd.n + 1);
	race.stop = 1;
	set_flag(&race.go, rd.n + 1);
	pthread_join(th, NULL);
	emit("{\"event\":\"result\",\"kind\":\"%s\",\"injector\":\"%s\",\"access\":\"race\","
	     "\"race\":\"%s\",\"rounds\":%d}", k->name, injector, act->name, rd.n);
	return 0;
}

/* ---- --list: the registry as one JSON object on stdout ---- */

static void print_flags(unsigned flags, const struct flag_name *names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		printf(",\"%s\":%s", names[i].name, flags & names[i].flag ? "true" : "false");
}

#define LIST(key, rows, names) do {							\
	printf("%s\"" key "\":[", !strcmp(key, "kinds") ? "" : ",");			\
	for (size_t i = 0; i < N(rows); i++) {						\
		printf("%s{\"name\":\"%s\"", i ? "," : "", rows[i].name);		\
		print_flags(rows[i].flags, names, N(names));				\
		printf("}");								\
	}										\
	printf("]");									\
} while (0)

static void list_registry(void)
{
	printf("{");
	LIST("kinds", kinds, kind_flags);
	LIST("injectors", injectors, injector_flags);
	LIST("steps", steps, step_flags);
	LIST("races", actions, action_flags);
	printf("}\n");
}

/* ---- one case: set the page up, poison it, meet it again by each access step ---- */

static struct args {
	const char *kind, *injector, *access, *dir, *cleanup, *race;
	int rounds;
	unsigned seed;
} a = { "anon", "madvise", "read", "/mnt", "none", NULL, 10, 1 };

static int parse_args(int argc, char **argv)
{
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--kind")) a.kind = argv[i + 1];
		else if (!strcmp(argv[i], "--injector")) a.injector = argv[i + 1];
		else if (!strcmp(argv[i], "--access")) a.access = argv[i + 1];
		else if (!strcmp(argv[i], "--dir")) a.dir = argv[i + 1];
		else if (!strcmp(argv[i], "--timeout")) timeout_s = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--cleanup")) a.cleanup = argv[i + 1];
		else if (!strcmp(argv[i], "--race")) a.race = argv[i + 1];
		else if (!strcmp(argv[i], "--rounds")) a.rounds = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--seed")) a.seed = strtoul(argv[i + 1], NULL, 10);
		else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
	}
	return 0;
}

/* The access, split into its steps: the first, when it is read, write or none, is the
 * classic access, the others each a row of steps[]; one that is not is refused. */
static const char *classic = "none";
static const struct step *later[MAX_STEPS];
static int nlater;

static void parse_access(const char *access)
{
	static char list[512];
	int first = 1;
	snprintf(list, sizeof(list), "%s", access);
	for (char *save = NULL, *w = strtok_r(list, ",", &save); w && nlater < MAX_STEPS;
	     w = strtok_r(NULL, ",", &save), first = 0) {
		const struct step *s = step_of(w);
		if (first && (!strcmp(w, "none") || (s && s->flags & S_CLASSIC))) {
			classic = w;
			continue;
		}
		if (!s) {
			errno = EINVAL;
			fail("unknown access step");
		}
		later[nlater++] = s;
	}
}

/* What one case found, for its result event. Static: it lives across siglongjmp. */
static struct outcome {
	struct target t;
	uintptr_t addr;
	uint64_t pfn_before, pfn_after;
	long hc_before, hc_after_inject, hc_after, huge_before, huge_after, hc_after_unpoison;
	int inject_rc, inject_errno, inject_sig, access_sig, fsync_errno, unpoison_errno;
	const char *data;
	char sig_inject[256], sig_access[256], sig_early[256], sibling[160];
} o = { .data = "unchecked", .unpoison_errno = -1, .hc_after_unpoison = -1 };

/* The page set up and announced, with what the kernel says of it before the poison. */
static void announce_page(void)
{
	setup(a.kind, a.dir, &o.t);
	o.huge_before = meminfo("HugePages_Total");
	o.addr = (uintptr_t)o.t.page;
	o.pfn_before = o.t.pfn;
	uint64_t flags_before = kpageflags(o.pfn_before);
	o.hc_before = hardware_corrupted_kb();
	emit("{\"event\":\"page\",\"kind\":\"%s\",\"vaddr\":\"%#lx\",\"pfn\":\"%#llx\","
	     "\"gpa\":\"%#llx\",\"kpageflags\":\"%#llx\",\"hardware_corrupted_kb\":%ld}",
	     a.kind, (unsigned long)o.addr, (unsigned long long)o.pfn_before,
	     (unsigned long long)(o.pfn_before * PAGE), (unsigned long long)flags_before,
	     o.hc_before);
}

static void poison(const struct injector *inj)
{
	memset((void *)&last_sig, 0, sizeof(last_sig));
	if (sigsetjmp(jump, 1) == 0) {
		armed = 1;
		o.inject_errno = inj->inject(inj, &o.t, o.hc_before);
		o.inject_rc = o.inject_errno ? -1 : 0;
		armed = 0;
	} else {
		o.inject_sig = 1;
	}
	sig_json(o.sig_inject, sizeof(o.sig_inject), o.inject_sig, last_sig.code, last_sig.addr,
		 last_sig.lsb, o.addr);
	o.hc_after_inject = hardware_corrupted_kb();
}

/* The classic access: read the page (compare), write it, or leave it. */
static void access_page(void)
{
	memset((void *)&last_sig, 0, sizeof(last_sig));
	if (o.t.page && sigsetjmp(jump, 1) == 0) {
		armed = 1;
		if (!strcmp(classic, "read"))
			o.data = check(o.t.page, seed, o.t.zero);
		else if (!strcmp(classic, "write")) {
			fill(o.t.page, seed + 1);
			o.data = "written";
			cur_seed = seed + 1;
		}
		armed = 0;
	} else if (o.t.page) {
		o.access_sig = 1;
		o.data = "unreadable";
	}
	sig_json(o.sig_access, sizeof(o.sig_access), o.access_sig, last_sig.code, last_sig.addr,
		 last_sig.lsb, o.addr);
	sig_json(o.sig_early, sizeof(o.sig_early), early_sig.signo, early_sig.code,
		 early_sig.addr, early_sig.lsb, o.addr);
	o.pfn_after = (o.t.page && !o.access_sig) ? pfn_of(o.t.page) : 0;
}

/* anon-shared-fork: what the child sharing the page saw. */
static void ask_sibling(void)
{
	snprintf(o.sibling, sizeof(o.sibling), "null");
	if (o.t.sibling <= 0)
		return;
	char buf[128] = "", early[32], late[32], sdata[32];
	int status = 0;
	if (write(o.t.to_sibling, "x", 1) == 1 &&
	    read(o.t.from_sibling, buf, sizeof(buf) - 1) > 0 &&
	    sscanf(buf, "%31s %31s %31s", early, late, sdata) == 3)
		snprintf(o.sibling, sizeof(o.sibling),
			 "{\"early_signal\":\"%s\",\"access_signal\":\"%s\",\"data\":\"%s\"}",
			 early, late, sdata);
	waitpid(o.t.sibling, &status, 0);
}

/* After the steps: fsync's error, the sibling, the huge page freed, the clean-up. */
static void finish(const struct kind *k)
{
	o.fsync_errno = fsync_step_errno;
	if (o.t.fd >= 0 && o.fsync_errno < 0)
		o.fsync_errno = fsync(o.t.fd) ? errno : 0;
	ask_sibling();
	if (o.t.page && k->flags & (K_HUGETLB | K_THP))
		munmap(o.t.page, HUGE);	/* a poisoned huge page leaves the pool when freed */
	o.huge_after = meminfo("HugePages_Total");
	o.hc_after = hardware_corrupted_kb();
	if (!strcmp(a.cleanup, "unpoison")) {
		int r = write_num("/sys/kernel/debug/hwpoison/unpoison-pfn", "%#llx\n",
				  o.pfn_before);
		o.unpoison_errno = -r;
		o.hc_after_unpoison = hardware_corrupted_kb();
	}
}

static void emit_result(void)
{
	emit("{\"event\":\"result\",\"kind\":\"%s\",\"injector\":\"%s\",\"access\":\"%s\","
	     "\"inject_rc\":%d,\"inject_errno\":%d,\"inject_signal\":%s,\"access_signal\":%s,"
	     "\"early_signal\":%s,\"sibling\":%s,"
	     "\"data\":\"%s\",\"pfn_before\":\"%#llx\",\"pfn_after\":\"%#llx\","
	     "\"hardware_corrupted_kb_before\":%ld,\"hardware_corrupted_kb_after_inject\":%ld,"
	     "\"hardware_corrupted_kb_after\":%ld,\"huge_pages_before\":%ld,"
	     "\"huge_pages_after\":%ld,\"fsync_errno\":%d,\"unpoison_errno\":%d,"
	     "\"hardware_corrupted_kb_after_unpoison\":%ld}",
	     a.kind, a.injector, a.access, o.inject_rc, o.inject_errno, o.sig_inject,
	     o.sig_access, o.sig_early, o.sibling, o.data, (unsigned long long)o.pfn_before,
	     (unsigned long long)o.pfn_after, o.hc_before, o.hc_after_inject, o.hc_after,
	     o.huge_before, o.huge_after, o.fsync_errno, o.unpoison_errno, o.hc_after_unpoison);
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "--list")) {
		list_registry();
		return 0;
	}
	if (parse_args(argc, argv))
		return 2;
	if (fcntl(chan, F_GETFD) < 0)
		chan = STDOUT_FILENO;
	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	const struct kind *k = kind_of(a.kind);
	const struct injector *inj = injector_of(a.injector);
	errno = EINVAL;
	if (!k)
		fail("unknown kind");
	if (!inj)
		fail("unknown injector");
	if (a.race) {
		const struct action *act = action_of(a.race);
		if (!act)
			fail("unknown race action");
		return race_main(k, a.injector, act, a.dir, a.rounds, a.seed);
	}
	parse_access(a.access);
	announce_page();
	poison(inj);
	access_page();
	cur_zero = o.t.zero;
	for (int i = 0; i < nlater; i++)
		run_step(later[i], &o.t);
	finish(k);
	emit_result();
	return 0;
}
