package ai.tah;

/**
 * tah on Android (and any JVM): a Think-at-Hard model loaded from a {@code .tah}
 * file, with sessions that chat and stream generated tokens.
 *
 * <pre>{@code
 * try (Tah tah = Tah.load(path, new Tah.Params());
 *      Tah.Session s = tah.newSession()) {
 *     s.chat(new Tah.Message[] {new Tah.Message("user", "What is 7 * 6?")}, true, null);
 *     s.generate(256, Tah.Sampling.greedy(), (piece, id, depth) -> {
 *         textView.append(piece);
 *         return true; // false stops
 *     });
 *     Tah.Stats st = s.stats();
 * }
 * }</pre>
 *
 * Threads: a model may be shared by sessions used on different threads; one
 * session is used by one thread at a time (its methods are synchronized). The
 * listener runs on the thread that called {@link Session#generate}; generation
 * itself runs on the model's own pool of {@link Params#threads} workers, so call
 * it off the UI thread. The native library is {@code libtah_jni.so}.
 */
public final class Tah implements AutoCloseable {
    static {
        System.loadLibrary("tah_jni");
    }

    /** The decider picks the hard tokens (TaH). */
    public static final int THINK_AUTO = 0;
    /** Depth 1 only: exactly the base model. */
    public static final int THINK_NEVER = 1;
    /** Every token to the maximum depth. */
    public static final int THINK_ALWAYS = 2;

    /** How a model is loaded. */
    public static final class Params {
        /** Worker threads; 0 = one per core. */
        public int threads = 0;
        /** Default context length of sessions; 0 = the model's, capped at 4096. */
        public int contextSize = 0;
        /** {@link #THINK_AUTO}, {@link #THINK_NEVER} or {@link #THINK_ALWAYS}. */
        public int thinkMode = THINK_AUTO;
        /** Decider threshold in [0, 1]; NaN = the file's. */
        public float threshold = Float.NaN;
        /** Deepest depth (1 = base model only); 0 = the file's. */
        public int maxDepth = 0;
        /** f32 KV cache instead of f16. */
        public boolean kvF32 = false;
    }

    /** Sampling settings; defaults are temperature 0.6, top-k 20, top-p 0.95. */
    public static final class Sampling {
        public float temperature = 0.6f;
        public int topK = 20;
        public float topP = 0.95f;
        public float minP = 0f;
        public long seed = 0;

        public static Sampling greedy() {
            Sampling s = new Sampling();
            s.temperature = 0f;
            s.topK = 0;
            s.topP = 1f;
            return s;
        }
    }

    /** One chat message. */
    public static final class Message {
        public final String role;
        public final String content;

        public Message(String role, String content) {
            this.role = role;
            this.content = content;
        }
    }

    /** Receives each generated token on the generating thread. */
    public interface TokenListener {
        /**
         * @param piece the text the token completes (may be empty)
         * @param tokenId the token id
         * @param depth the deepest pass it ran (1 = base, 2+ = "hard")
         * @return true to go on, false to stop
         */
        boolean onToken(String piece, int tokenId, int depth);
    }

    /** Statistics of a session's last generation. */
    public static final class Stats {
        public final long promptTokens, promptHardTokens, generatedTokens, hardTokens;
        public final double hardRate, avgDepth, prefillTokensPerS, decodeTokensPerS;
        public final long kvBytesDepth1, kvBytesDepth2, nPast, nCtx;
        /** 0 none yet, 1 end of generation, 2 max tokens, 3 context full, 4 listener. */
        public final int stopReason;

        Stats(double[] v) {
            promptTokens = (long) v[0];
            promptHardTokens = (long) v[1];
            generatedTokens = (long) v[2];
            hardTokens = (long) v[3];
            hardRate = v[4];
            avgDepth = v[5];
            prefillTokensPerS = v[6];
            decodeTokensPerS = v[7];
            kvBytesDepth1 = (long) v[8];
            kvBytesDepth2 = (long) v[9];
            nPast = (long) v[10];
            nCtx = (long) v[11];
            stopReason = (int) v[12];
        }

        @Override
        public String toString() {
            return String.format(
                    "prompt %d (hard %d), generated %d (hard %d, rate %.2f, avg depth %.2f), "
                            + "prefill %.1f tok/s, decode %.1f tok/s, KV %d + %d bytes, %d/%d tokens, stop %d",
                    promptTokens, promptHardTokens, generatedTokens, hardTokens, hardRate, avgDepth,
                    prefillTokensPerS, decodeTokensPerS, kvBytesDepth1, kvBytesDepth2, nPast, nCtx,
                    stopReason);
        }
    }

    private long handle;

    private Tah(long handle) {
        this.handle = handle;
    }

    /** The native library's version. */
    public static String version() {
        return nativeVersion();
    }

    /** Loads (memory-maps) a {@code .tah} file. */
    public static Tah load(String path, Params params) {
        Params p = params != null ? params : new Params();
        return new Tah(nativeLoad(path, p.threads, p.contextSize, p.thinkMode, p.threshold, p.maxDepth, p.kvF32));
    }

    private synchronized long handle() {
        if (handle == 0) throw new TahException("the model is closed");
        return handle;
    }

    public int vocabSize() {
        return nativeVocabSize(handle());
    }

    public int[] tokenize(String text, boolean addSpecial) {
        return nativeTokenize(handle(), text, addSpecial);
    }

    public String detokenize(int[] ids) {
        return nativeDetokenize(handle(), ids);
    }

    /** A new session with the model's context length. */
    public Session newSession() {
        return newSession(0);
    }

    /** A new session; {@code contextSize} 0 = the model's. */
    public Session newSession(int contextSize) {
        return new Session(nativeNewSession(handle(), contextSize, 0));
    }

    /** Releases this handle; open sessions keep the model alive until closed. */
    @Override
    public synchronized void close() {
        if (handle != 0) {
            nativeFreeModel(handle);
            handle = 0;
        }
    }

    /** One conversation. */
    public static final class Session implements AutoCloseable {
        private long handle;

        private Session(long handle) {
            this.handle = handle;
        }

        private long h() {
            if (handle == 0) throw new TahException("the session is closed");
            return handle;
        }

        /**
         * Sets the conversation (the model's chat template renders it) and queues
         * what the session does not hold yet. Pass the whole conversation each turn,
         * the assistant's replies included.
         *
         * @param enableThinking passed to the template when not null
         * @return tokens queued
         */
        public synchronized int chat(Message[] messages, boolean addGenerationPrompt, Boolean enableThinking) {
            String[] roles = new String[messages.length];
            String[] contents = new String[messages.length];
            for (int i = 0; i < messages.length; i++) {
                roles[i] = messages[i].role;
                contents[i] = messages[i].content;
            }
            int thinking = enableThinking == null ? -1 : (enableThinking ? 1 : 0);
            return nativeChat(h(), roles, contents, addGenerationPrompt, thinking);
        }

        /** Queues text after what the session holds; returns tokens queued. */
        public synchronized int prompt(String text, boolean addSpecial) {
            return nativePrompt(h(), text, addSpecial);
        }

        /** Queues token ids after what the session holds. */
        public synchronized void promptTokens(int[] ids) {
            nativePromptTokens(h(), ids);
        }

        /**
         * Feeds the queued prompt and generates up to {@code maxTokens} tokens,
         * calling {@code listener} for each (the end-of-generation token ends it
         * without a call). Returns the number of tokens generated.
         */
        public synchronized int generate(int maxTokens, Sampling sampling, TokenListener listener) {
            Sampling s = sampling != null ? sampling : new Sampling();
            return nativeGenerate(h(), maxTokens, s.temperature, s.topK, s.topP, s.minP, s.seed, listener);
        }

        public synchronized Stats stats() {
            return new Stats(nativeStats(h()));
        }

        /** Forgets the conversation. */
        public synchronized void reset() {
            nativeReset(h());
        }

        @Override
        public synchronized void close() {
            if (handle != 0) {
                nativeFreeSession(handle);
                handle = 0;
            }
        }
    }

    private static native String nativeVersion();

    private static native long nativeLoad(
            String path, int threads, int ctx, int think, float threshold, int maxDepth, boolean kvF32);

    private static native void nativeFreeModel(long model);

    private static native int nativeVocabSize(long model);

    private static native int[] nativeTokenize(long model, String text, boolean addSpecial);

    private static native String nativeDetokenize(long model, int[] ids);

    private static native long nativeNewSession(long model, int ctx, int batch);

    private static native void nativeFreeSession(long session);

    private static native void nativeReset(long session);

    private static native int nativePrompt(long session, String text, boolean addSpecial);

    private static native void nativePromptTokens(long session, int[] ids);

    private static native int nativeChat(
            long session, String[] roles, String[] contents, boolean addGenerationPrompt, int enableThinking);

    private static native int nativeGenerate(
            long session, int maxTokens, float temperature, int topK, float topP, float minP, long seed,
            TokenListener listener);

    private static native double[] nativeStats(long session);
}
