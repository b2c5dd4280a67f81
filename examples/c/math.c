/*
 * math.c - ask a model a math question through tah's C ABI and stream the answer.
 *
 *   ./math MODEL.tah [MAX_TOKENS] [THREADS]
 *
 * Uses the chat API (the model's own chat template), greedy decoding, and prints
 * the statistics to stderr. Exits non-zero on any error. Build: ./build.sh.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tah.h"

struct answer {
    size_t bytes;  /* text streamed so far */
    int tokens;    /* callbacks seen */
    int max_depth; /* deepest depth seen */
};

/* Called on this thread for every generated token; 0 = go on. */
static int on_token(const char *piece, size_t len, int32_t token_id, int32_t depth,
                    void *user_data) {
    struct answer *a = user_data;
    (void)token_id;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    a->bytes += len;
    a->tokens += 1;
    if (depth > a->max_depth) a->max_depth = depth;
    return 0;
}

static int fail(const char *what) {
    fprintf(stderr, "math: %s: %s\n", what, tah_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.tah [MAX_TOKENS] [THREADS]\n", argv[0]);
        return 2;
    }
    int max_tokens = argc > 2 ? atoi(argv[2]) : 128;
    tah_model_params mp;
    tah_model_params_init(&mp, sizeof mp);
    mp.n_threads = argc > 3 ? atoi(argv[3]) : 0;
    mp.n_ctx = 512; /* a short conversation: a small KV cache */

    fprintf(stderr, "tah %s\n", tah_version());
    tah_model *model = tah_model_load(argv[1], &mp);
    if (!model) return fail("load");
    tah_session *session = tah_session_new(model, NULL);
    if (!session) {
        tah_model_free(model);
        return fail("session");
    }
    /* The session keeps the model alive: the caller's handle can go now. */
    tah_model_free(model);

    tah_chat_message messages[] = {
        {"system", "You are a careful math tutor. Answer briefly."},
        {"user", "What is 12 * 7? Show the multiplication, then give the answer."},
    };
    int queued = tah_session_chat(session, messages, 2, true, TAH_THINKING_DEFAULT);
    if (queued < 0) {
        tah_session_free(session);
        return fail("chat");
    }

    struct answer a = {0, 0, 0};
    tah_sampling greedy;
    tah_sampling_init(&greedy, sizeof greedy);
    greedy.temperature = 0; /* greedy: argmax */
    int n = tah_session_generate(session, max_tokens, &greedy, on_token, &a);
    printf("\n");
    if (n < 0) {
        tah_session_free(session);
        return fail("generate");
    }

    tah_stats st;
    st.struct_size = sizeof st;
    if (tah_session_stats(session, &st) != 0) {
        tah_session_free(session);
        return fail("stats");
    }
    fprintf(stderr,
            "[math] prompt %d tokens (%llu queued), generated %llu (%d streamed, %zu bytes), "
            "hard %llu (rate %.2f, avg depth %.2f), prefill %.1f tok/s, decode %.1f tok/s, "
            "KV %llu + %llu bytes, stop %d\n",
            queued, (unsigned long long)st.prompt_tokens,
            (unsigned long long)st.generated_tokens, a.tokens, a.bytes,
            (unsigned long long)st.hard_tokens, st.hard_rate, st.avg_depth,
            st.prefill_tokens_per_s, st.decode_tokens_per_s,
            (unsigned long long)st.kv_bytes_depth1, (unsigned long long)st.kv_bytes_depth2,
            st.stop_reason);
    tah_session_free(session);
    if (n == 0 || a.tokens == 0) {
        fprintf(stderr, "math: no tokens generated\n");
        return 1;
    }
    return 0;
}
