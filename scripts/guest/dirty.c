/* vpool-dirty MiB [MiB/s] [verify]: rewrite MiB of memory forever, one
 * pass after another, optionally capped at a rate; print "DIRTY <pass>" at
 * the first pass and every 16th.
 *
 * With verify = 1 the guest also checks that no write of its was lost:
 *  - every pass stamps each page of the region with its pass number and
 *    page index (first, second and last word), and before it stamps a page
 *    it checks the page still holds the previous pass's stamp. A write
 *    that a migration lost (the page arrived with an older content, as
 *    QEMU before 9.0 did under TCG) shows as an older stamp;
 *  - a static region (MiB/8, at least 1 MiB) is filled once with a known
 *    pseudo-random stream and compared with it about once a second (a page
 *    that arrived damaged or zeroed).
 * It prints "VERIFY-FAIL ..." for the first failures and, about once a
 * second, "VERIFY <pass> pages=<n> static=<KiB> fails=<total>" (fails
 * never goes back to 0).
 *
 * Testing the checker itself: VPOOL_DIRTY_LOSE=<pass>:<page> skips that
 * one write (a lost write), VPOOL_DIRTY_PASSES=<n> stops after n passes
 * (exit status 1 when anything failed). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define PAGE 4096
#define WORDS (PAGE / 8)

static uint64_t mix(uint64_t pass, uint64_t page) {
	uint64_t x = pass * 0x9e3779b97f4a7c15ULL ^ page * 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 31; x *= 0x94d049bb133111ebULL; x ^= x >> 29;
	return x | 1;
}

static double now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static unsigned long fails;

static void fail(const char *what, size_t at, unsigned long pass, uint64_t got, uint64_t want) {
	if (++fails <= 8)
		printf("VERIFY-FAIL %s=%zu pass=%lu got=%016llx want=%016llx\n", what, at, pass,
		       (unsigned long long)got, (unsigned long long)want);
}

/* fill writes (check = 0) or compares (check = 1) the static stream. */
static void pattern(uint64_t *s, size_t words, int check, unsigned long pass) {
	uint64_t x = 88172645463325252ULL;
	for (size_t i = 0; i < words; i++) {
		x ^= x << 13; x ^= x >> 7; x ^= x << 17;
		if (!check)
			s[i] = x;
		else if (s[i] != x)
			fail("static-word", i, pass, s[i], x);
	}
}

int main(int argc, char **argv) {
	long mib = argc > 1 ? atol(argv[1]) : 64, rate = argc > 2 ? atol(argv[2]) : 0;
	int verify = argc > 3 && atoi(argv[3]) != 0;
	size_t pages = ((size_t)mib << 20) / PAGE, swords = 0;
	unsigned long pass = 0, lose_pass = 0, lose_page = 0, stop = 0;
	uint64_t *p = malloc(pages * PAGE), *s = NULL;
	double last = 0;
	const char *e;
	if (!p) { perror("dirty: malloc"); return 1; }
	if ((e = getenv("VPOOL_DIRTY_LOSE")) != NULL)
		sscanf(e, "%lu:%lu", &lose_pass, &lose_page);
	if ((e = getenv("VPOOL_DIRTY_PASSES")) != NULL)
		stop = strtoul(e, NULL, 10);
	if (verify) {
		swords = ((size_t)(mib / 8 > 1 ? mib / 8 : 1) << 20) / 8;
		if (!(s = malloc(swords * 8))) { perror("dirty: malloc"); return 1; }
		pattern(s, swords, 0, 0);
	}
	for (;;) {
		double t0 = now();
		pass++;
		for (size_t i = 0; i < pages; i++) {
			uint64_t *w = p + i * WORDS;
			if (verify && pass > 1) {
				uint64_t m = mix(pass - 1, i);
				if (w[0] != ((uint64_t)(pass - 1) << 32 | i))
					fail("page", i, pass, w[0], (uint64_t)(pass - 1) << 32 | i);
				else if (w[1] != m || w[WORDS - 1] != ~m)
					fail("page-tail", i, pass, w[1], m);
			}
			if (pass == lose_pass && i == lose_page)
				continue;
			uint64_t m = mix(pass, i);
			w[0] = (uint64_t)pass << 32 | i;
			w[1] = m;
			w[WORDS - 1] = ~m;
		}
		if (pass == 1 || pass % 16 == 0)
			printf("DIRTY %lu\n", pass);
		if (verify && (pass == 1 || now() - last >= 1.0 || pass == stop)) {
			pattern(s, swords, 1, pass);
			printf("VERIFY %lu pages=%zu static=%zu fails=%lu\n", pass, pages, swords / 128, fails);
			last = now();
		}
		fflush(stdout);
		if (stop && pass >= stop)
			return fails ? 1 : 0;
		if (rate > 0) {
			double want = (double)mib / (double)rate, took = now() - t0;
			if (want > took) {
				struct timespec d = {(time_t)(want - took), (long)((want - took - (time_t)(want - took)) * 1e9)};
				nanosleep(&d, NULL);
			}
		}
	}
}
