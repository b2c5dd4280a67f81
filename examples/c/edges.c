/* Hostile numbers through tah's C ABI: every call must fail cleanly (NULL or
 * -1 with a message from tah_last_error) and the process must survive to the
 * end, where one sane session still generates.
 *   edges MODEL.tah
 * Exit 0 when every case ends as expected; prints one line per case. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tah.h"

static int failures = 0;

/* A case that must fail: `ok` is whether the call returned its failure
 * value; the message must mention `want`. */
static void expect_fail(const char *name, int ok, const char *want) {
  const char *err = tah_last_error();
  if (ok && err && strstr(err, want)) {
    printf("ok   %-34s %s\n", name, err);
  } else {
    printf("FAIL %-34s returned %s, error \"%s\" (wanted \"%s\")\n", name,
           ok ? "the failure value" : "success", err ? err : "(null)", want);
    failures++;
  }
}

static tah_model *load(const char *path, tah_model_params p) {
  return tah_model_load(path, &p);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MODEL.tah\n", argv[0]);
    return 2;
  }
  const char *path = argv[1];
  tah_model_params mp;

  tah_model_params_init(&mp, sizeof mp);
  mp.n_threads = 5000;
  expect_fail("model: 5000 threads", load(path, mp) == NULL, "threads");

  tah_model_params_init(&mp, sizeof mp);
  mp.n_threads = -1;
  expect_fail("model: -1 threads", load(path, mp) == NULL, "negative");

  tah_model_params_init(&mp, sizeof mp);
  mp.n_ctx = -5;
  expect_fail("model: context -5", load(path, mp) == NULL, "negative");

  tah_model_params_init(&mp, sizeof mp);
  mp.threshold = 2.0f;
  expect_fail("model: threshold 2", load(path, mp) == NULL, "threshold");

  tah_model_params_init(&mp, sizeof mp);
  mp.think_mode = 99;
  expect_fail("model: think mode 99", load(path, mp) == NULL, "think mode");

  tah_model_params_init(&mp, sizeof mp);
  mp.kv_type = 99;
  expect_fail("model: KV type 99", load(path, mp) == NULL, "KV type");

  tah_model_params_init(&mp, sizeof mp);
  mp.max_depth = 1000;
  expect_fail("model: max depth 1000", load(path, mp) == NULL, "depth");

  tah_model_params_init(&mp, sizeof mp);
  mp.n_threads = 1;
  tah_model *m = load(path, mp);
  if (!m) {
    printf("FAIL cannot load %s: %s\n", path, tah_last_error());
    return 1;
  }

  tah_session_params sp;
  tah_session_params_init(&sp, sizeof sp);
  sp.n_ctx = INT32_MAX;
  expect_fail("session: context INT32_MAX", tah_session_new(m, &sp) == NULL, "context");

  tah_session_params_init(&sp, sizeof sp);
  sp.n_batch = 1000000000;
  expect_fail("session: batch 1e9", tah_session_new(m, &sp) == NULL, "batch");

  tah_session_params_init(&sp, sizeof sp);
  sp.n_batch = -3;
  expect_fail("session: batch -3", tah_session_new(m, &sp) == NULL, "negative");

  tah_session_params_init(&sp, sizeof sp);
  sp.n_ctx = 256;
  tah_session *s = tah_session_new(m, &sp);
  if (!s) {
    printf("FAIL a 256-token session: %s\n", tah_last_error());
    return 1;
  }
  expect_fail("generate: max_tokens -1", tah_session_generate(s, -1, NULL, NULL, NULL) == -1,
              "negative");
  tah_sampling bad;
  tah_sampling_init(&bad, sizeof bad);
  bad.top_k = -7;
  expect_fail("generate: top_k -7", tah_session_generate(s, 4, &bad, NULL, NULL) == -1,
              "top_k");
  int32_t ids[2] = {1, -9};
  expect_fail("prompt: token id -9", tah_session_prompt_tokens(s, ids, 2) == -1, "negative");
  int32_t huge[1] = {INT32_MAX};
  int r = tah_session_prompt_tokens(s, huge, 1);
  if (r == 0) r = tah_session_generate(s, 1, NULL, NULL, NULL);
  expect_fail("prompt: token id INT32_MAX", r == -1, "vocabulary");

  /* The session is still usable after all of that. */
  tah_session_reset(s);
  int32_t prompt[3] = {1, 2, 3};
  tah_sampling greedy;
  tah_sampling_init(&greedy, sizeof greedy);
  greedy.temperature = 0;
  int n = tah_session_prompt_tokens(s, prompt, 3) == 0
              ? tah_session_generate(s, 4, &greedy, NULL, NULL)
              : -1;
  if (n < 1) {
    printf("FAIL the session does not generate afterwards: %s\n", tah_last_error());
    failures++;
  } else {
    printf("ok   %-34s %d tokens\n", "a sane generation afterwards", n);
  }
  tah_session_free(s);
  tah_model_free(m);
  printf("%d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
