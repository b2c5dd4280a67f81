package ai.tah;

import java.io.FileDescriptor;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.ReentrantLock;
import java.util.concurrent.locks.ReentrantReadWriteLock;

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
 * <p>Threads: a model may be shared by sessions used on different threads. A
 * session runs one call at a time: {@link Session#generate} (and the other calls
 * that use the conversation) wait for a running one. Three calls never wait:
 * {@link Session#cancel} stops the running generation (also during its prompt),
 * {@link Session#stats} returns the statistics as of the last finished call, and
 * {@link Session#close} from another thread cancels the running generation, waits
 * for it to return (within one chunk of work) and frees the session. The listener
 * runs on the thread that called {@link Session#generate}; the forward passes run
 * on the model's own pool of {@link Params#threads} workers, so call generate off
 * the UI thread. The native library is {@code libtah_jni.so}.
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

    /** KV cache of 16-bit floats (the default). */
    public static final String KV_F16 = "f16";
    /** KV cache of 32-bit floats: twice the memory of f16. */
    public static final String KV_F32 = "f32";
    /**
     * KV cache of 8-bit blocks (ggml's q8_0: 32 values in 34 bytes), about half the memory of
     * f16; needs a head dimension that is a multiple of 32 (Qwen3, Qwen2.5, SmolLM2).
     */
    public static final String KV_Q8_0 = "q8_0";

    /** {@link Stats#stopReason}: no generation yet. */
    public static final int STOP_NONE = 0;
    /** An end-of-generation token (not given to the listener). */
    public static final int STOP_EOG = 1;
    /** {@code maxTokens} tokens were generated. */
    public static final int STOP_MAX_TOKENS = 2;
    /** The context is full. */
    public static final int STOP_CONTEXT_FULL = 3;
    /** The listener returned false. */
    public static final int STOP_LISTENER = 4;
    /** The text reached a stop string (which was not given to the listener). */
    public static final int STOP_STRING = 5;
    /** {@link Session#cancel} (or {@link Session#close}) stopped it. */
    public static final int STOP_CANCELLED = 6;

    /** {@link Logger} levels. */
    public static final int LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3;

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
        /** KV cache element type of the sessions: {@link #KV_F16}, {@link #KV_F32} or {@link #KV_Q8_0}. */
        public String kvType = KV_F16;
    }

    /** How a session is made. */
    public static final class SessionParams {
        /** Context length; 0 = the model's ({@link Params#contextSize}). */
        public int contextSize = 0;
        /** Most prompt tokens per forward pass (and per cancel check); 0 = 64. */
        public int batch = 0;
        /**
         * When the conversation reaches the end of the context: drop the oldest
         * turns after the kept prefix and go on (true), or stop with "context full".
         */
        public boolean contextShift = true;
        /** Tokens a context shift keeps at the start; -1 = the system prompt's. */
        public int keepTokens = -1;
    }

    /**
     * One generation's settings. Defaults: temperature 0.6, top-k 20, top-p 0.95,
     * no penalties, no bias, no stop strings. The engine validates every value (NaN
     * or out of range throws {@link TahException} naming it). Order: logit bias,
     * penalties, then (unless greedy) temperature, min-p, top-k, top-p, draw.
     */
    public static final class Sampling {
        /** 0 = greedy. */
        public float temperature = 0.6f;
        /** 0 = off. */
        public int topK = 20;
        /** In (0, 1]; 1 = off. */
        public float topP = 0.95f;
        /** In [0, 1]; 0 = off. */
        public float minP = 0f;
        public long seed = 0;
        /** Above 1 discourages the recent tokens; 1 = off. */
        public float repeatPenalty = 1f;
        /** Recent tokens (prompt included) the penalties look at; 0 = off. */
        public int repeatLastN = 64;
        /** In [-2, 2]: subtracted once from a token seen in the window. */
        public float presencePenalty = 0f;
        /** In [-2, 2]: subtracted per occurrence in the window. */
        public float frequencyPenalty = 0f;
        /** Token id to a bias in [-100, 100] added to its logit (-100 bans it). */
        public final Map<Integer, Float> logitBias = new LinkedHashMap<>();
        /** Generation ends where the text reaches one of these (not delivered). */
        public final List<String> stop = new ArrayList<>();

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

    /**
     * Receives the library's log messages. It may be called from any thread,
     * also threads the JVM did not start (they are attached for the call), and
     * must not throw (an exception is dropped) or block for long.
     */
    public interface Logger {
        /** @param level {@link #LOG_ERROR} .. {@link #LOG_DEBUG} */
        void log(int level, String message);
    }

    /** Statistics of a session's last generation. */
    public static final class Stats {
        public final long promptTokens, promptHardTokens, generatedTokens, hardTokens;
        public final double hardRate, avgDepth, prefillTokensPerS, decodeTokensPerS;
        public final long kvBytesDepth1, kvBytesDepth2, nPast, nCtx;
        /** {@link #STOP_NONE} .. {@link #STOP_CANCELLED}. */
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

    /** Calls hold the read lock; close takes the write lock to free the handle. */
    private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();
    private long handle;

    private Tah(long handle) {
        this.handle = handle;
    }

    /** The native library's version. */
    public static String version() {
        return nativeVersion();
    }

    /**
     * Sets the receiver of the library's log messages (null: none, the default;
     * the library never writes to stderr itself). Process-wide.
     */
    public static void setLogger(Logger logger) {
        nativeSetLogger(logger);
    }

    /**
     * Sends {@code message} at {@link #LOG_INFO} through the library's log sink,
     * once from the calling thread and once from a new native thread, and waits:
     * shows that a {@link Logger} receives messages from threads the JVM did not
     * start.
     */
    public static void testLogger(String message) {
        nativeTestLog(message);
    }

    /** Loads (memory-maps) a {@code .tah} file. */
    public static Tah load(String path, Params params) {
        Params p = params != null ? params : new Params();
        return new Tah(nativeLoad(path, p.threads, p.contextSize, p.thinkMode, p.threshold, p.maxDepth, p.kvType));
    }

    /**
     * Loads a model stored as {@code length} bytes at {@code offset} of an open file
     * (0 = to its end), mapped without copying: a model stored uncompressed in an
     * APK (an {@code AssetFileDescriptor}'s start offset and length) or a file
     * opened through the Storage Access Framework. The descriptor stays the
     * caller's (the model keeps its own duplicate): close it when this returns. On
     * Android, {@code ai.tah.TahAndroid} takes a {@code ParcelFileDescriptor} or an
     * {@code AssetFileDescriptor} directly.
     */
    public static Tah load(FileDescriptor fd, long offset, long length, Params params) {
        if (fd == null) throw new TahException("file descriptor is null");
        return loadFd(nativeFdOf(fd), offset, length, params);
    }

    /** {@link #load(FileDescriptor, long, long, Params)} from a raw descriptor number. */
    public static Tah loadFd(int fd, long offset, long length, Params params) {
        Params p = params != null ? params : new Params();
        return new Tah(nativeLoadFd(
                fd, offset, length, p.threads, p.contextSize, p.thinkMode, p.threshold, p.maxDepth, p.kvType));
    }

    private long enter() {
        lock.readLock().lock();
        if (handle == 0) {
            lock.readLock().unlock();
            throw new TahException("the model is closed");
        }
        return handle;
    }

    private void exit() {
        lock.readLock().unlock();
    }

    public int vocabSize() {
        long h = enter();
        try {
            return nativeVocabSize(h);
        } finally {
            exit();
        }
    }

    /** The beginning-of-sequence token id, or -1 when the model has none. */
    public int bosId() {
        long h = enter();
        try {
            return nativeSpecialId(h, 0);
        } finally {
            exit();
        }
    }

    /** The end-of-sequence token id, or -1 when the model has none. */
    public int eosId() {
        long h = enter();
        try {
            return nativeSpecialId(h, 1);
        } finally {
            exit();
        }
    }

    /** Every token id that ends generation, sorted (empty without a tokenizer). */
    public int[] eogIds() {
        long h = enter();
        try {
            return nativeEogIds(h);
        } finally {
            exit();
        }
    }

    /** The vocabulary entry of a token as the tokenizer stores it (e.g. {@code "<|im_end|>"}). */
    public String tokenText(int tokenId) {
        long h = enter();
        try {
            return nativeTokenText(h, tokenId);
        } finally {
            exit();
        }
    }

    /** {@link #tokenize(String, boolean, boolean)} with control tokens as plain text. */
    public int[] tokenize(String text, boolean addSpecial) {
        return tokenize(text, addSpecial, false);
    }

    /**
     * Token ids of {@code text}. {@code addSpecial}: BOS where the model wants one.
     * {@code parseSpecial}: control tokens written in the text ({@code <|im_end|>})
     * become control tokens; leave it false for anything a user typed.
     */
    public int[] tokenize(String text, boolean addSpecial, boolean parseSpecial) {
        long h = enter();
        try {
            return nativeTokenize(h, text, addSpecial, parseSpecial);
        } finally {
            exit();
        }
    }

    public String detokenize(int[] ids) {
        long h = enter();
        try {
            return nativeDetokenize(h, ids);
        } finally {
            exit();
        }
    }

    /** A new session with the model's context length. */
    public Session newSession() {
        return newSession(new SessionParams());
    }

    /** A new session; {@code contextSize} 0 = the model's. */
    public Session newSession(int contextSize) {
        SessionParams p = new SessionParams();
        p.contextSize = contextSize;
        return newSession(p);
    }

    public Session newSession(SessionParams params) {
        SessionParams p = params != null ? params : new SessionParams();
        long h = enter();
        try {
            return new Session(nativeNewSession(h, p.contextSize, p.batch, p.contextShift, p.keepTokens));
        } finally {
            exit();
        }
    }

    /**
     * Releases this handle (waiting for calls on it to return); open sessions
     * keep the model alive until they are closed. Later calls throw.
     */
    @Override
    public void close() {
        lock.writeLock().lock();
        try {
            if (handle != 0) {
                nativeFreeModel(handle);
                handle = 0;
            }
        } finally {
            lock.writeLock().unlock();
        }
    }

    /**
     * One conversation. Calls after {@link #close} throw {@link TahException},
     * except {@code close} and {@code cancel}, which then do nothing.
     */
    public static final class Session implements AutoCloseable {
        /** Held by each call that uses the conversation (reentrant: see close). */
        private final ReentrantLock busy = new ReentrantLock();
        /** Guards {@link #handle} for the calls that do not take {@link #busy}. */
        private final Object freeing = new Object();
        private long handle;
        private volatile boolean closing;

        private Session(long handle) {
            this.handle = handle;
        }

        private long enter() {
            busy.lock();
            if (closing) {
                busy.unlock();
                throw new TahException("the session is closed");
            }
            return handle;
        }

        private void exit() {
            try {
                // close() from inside this session's listener: free it now that
                // the outermost call returns.
                if (closing && busy.getHoldCount() == 1) free();
            } finally {
                busy.unlock();
            }
        }

        private void free() {
            synchronized (freeing) {
                if (handle != 0) {
                    nativeFreeSession(handle);
                    handle = 0;
                }
            }
        }

        /**
         * Sets the conversation (the model's chat template renders it) and queues
         * what the session does not hold yet. Pass the whole conversation each turn,
         * the assistant's replies included. Message contents are plain text: the
         * template alone writes the role markers.
         *
         * @param enableThinking passed to the template when not null
         * @return tokens queued
         */
        public int chat(Message[] messages, boolean addGenerationPrompt, Boolean enableThinking) {
            if (messages == null) throw new TahException("messages are null");
            String[] roles = new String[messages.length];
            String[] contents = new String[messages.length];
            for (int i = 0; i < messages.length; i++) {
                if (messages[i] == null) throw new TahException("message " + i + " is null");
                roles[i] = messages[i].role;
                contents[i] = messages[i].content;
            }
            int thinking = enableThinking == null ? -1 : (enableThinking ? 1 : 0);
            long h = enter();
            try {
                return nativeChat(h, roles, contents, addGenerationPrompt, thinking);
            } finally {
                exit();
            }
        }

        /** {@link #prompt(String, boolean, boolean)} with control tokens as plain text. */
        public int prompt(String text, boolean addSpecial) {
            return prompt(text, addSpecial, false);
        }

        /**
         * Queues text after what the session holds; returns tokens queued.
         * {@code parseSpecial}: see {@link Tah#tokenize(String, boolean, boolean)}.
         */
        public int prompt(String text, boolean addSpecial, boolean parseSpecial) {
            long h = enter();
            try {
                return nativePrompt(h, text, addSpecial, parseSpecial);
            } finally {
                exit();
            }
        }

        /** Queues token ids after what the session holds. */
        public void promptTokens(int[] ids) {
            long h = enter();
            try {
                nativePromptTokens(h, ids);
            } finally {
                exit();
            }
        }

        /**
         * Feeds the queued prompt and generates up to {@code maxTokens} tokens,
         * calling {@code listener} (may be null) for each. Returns the number of
         * tokens given to the listener; why it ended is {@code stats().stopReason}
         * (an end-of-generation token or a stop string is not given to it).
         * {@link #cancel} makes it return early with {@link #STOP_CANCELLED}; the
         * session then holds what was completed.
         */
        public int generate(int maxTokens, Sampling sampling, TokenListener listener) {
            Sampling s = sampling != null ? sampling : new Sampling();
            int[] biasIds = new int[s.logitBias.size()];
            float[] biasValues = new float[biasIds.length];
            int i = 0;
            for (Map.Entry<Integer, Float> e : s.logitBias.entrySet()) {
                if (e.getKey() == null || e.getValue() == null) throw new TahException("logit bias: null entry");
                biasIds[i] = e.getKey();
                biasValues[i++] = e.getValue();
            }
            String[] stop = s.stop.toArray(new String[0]);
            long h = enter();
            try {
                return nativeGenerate(h, maxTokens, s.temperature, s.topK, s.topP, s.minP, s.seed,
                        s.repeatPenalty, s.repeatLastN, s.presencePenalty, s.frequencyPenalty,
                        biasIds, biasValues, stop, listener);
            } finally {
                exit();
            }
        }

        /**
         * Stops the running {@link #generate} (also while it processes the prompt)
         * within one chunk of work; it returns with {@link #STOP_CANCELLED}. Any
         * thread, never waits. A cancel while no generation runs is void; after
         * close it does nothing.
         */
        public void cancel() {
            synchronized (freeing) {
                if (handle != 0) nativeCancel(handle);
            }
        }

        /**
         * Statistics as of the last finished call (never waits: during a
         * generation they describe the session before it).
         */
        public Stats stats() {
            synchronized (freeing) {
                if (handle == 0) throw new TahException("the session is closed");
                return new Stats(nativeStats(handle));
            }
        }

        /** Forgets the conversation. Waits for a running generation (cancel it first). */
        public void reset() {
            long h = enter();
            try {
                nativeReset(h);
            } finally {
                exit();
            }
        }

        /**
         * The session's complete state (conversation, cache, sampler), to restore
         * later into a session of the same model and KV type, also in another
         * process (after Android killed the app). Waits for a running generation.
         */
        public byte[] saveState() {
            long h = enter();
            try {
                return nativeSaveState(h);
            } finally {
                exit();
            }
        }

        /** Restores what {@link #saveState} returned; throws on another model or damaged bytes. */
        public void restoreState(byte[] state) {
            long h = enter();
            try {
                nativeRestoreState(h, state);
            } finally {
                exit();
            }
        }

        /** {@link #saveState} to a file (written whole or not at all). */
        public void saveFile(String path) {
            long h = enter();
            try {
                nativeSaveFile(h, path);
            } finally {
                exit();
            }
        }

        /** {@link #restoreState} from a file {@link #saveFile} wrote. */
        public void loadFile(String path) {
            long h = enter();
            try {
                nativeLoadFile(h, path);
            } finally {
                exit();
            }
        }

        /**
         * Frees the session. From another thread while a generation runs: cancels
         * it, waits for it to return, then frees. From inside this session's own
         * listener: cancels, and the session is freed when generate returns.
         * Later calls throw; a second close does nothing (it waits like the first).
         */
        @Override
        public void close() {
            synchronized (freeing) {
                if (handle == 0) return;
                closing = true;
            }
            if (busy.isHeldByCurrentThread()) {
                cancel(); // inside a call: exit() frees it
                return;
            }
            boolean interrupted = false;
            // A generation may clear a cancel that lands just before it starts:
            // cancel again until the session is ours.
            while (true) {
                cancel();
                try {
                    if (busy.tryLock(10, TimeUnit.MILLISECONDS)) break;
                } catch (InterruptedException e) {
                    interrupted = true;
                }
            }
            try {
                free();
            } finally {
                busy.unlock();
                if (interrupted) Thread.currentThread().interrupt();
            }
        }
    }

    private static native String nativeVersion();

    private static native void nativeSetLogger(Logger logger);

    private static native void nativeTestLog(String message);

    private static native long nativeLoad(
            String path, int threads, int ctx, int think, float threshold, int maxDepth, String kvType);

    private static native long nativeLoadFd(
            int fd, long offset, long length, int threads, int ctx, int think, float threshold, int maxDepth,
            String kvType);

    private static native int nativeFdOf(FileDescriptor fd);

    private static native void nativeFreeModel(long model);

    private static native int nativeVocabSize(long model);

    private static native int nativeSpecialId(long model, int which);

    private static native int[] nativeEogIds(long model);

    private static native String nativeTokenText(long model, int tokenId);

    private static native int[] nativeTokenize(long model, String text, boolean addSpecial, boolean parseSpecial);

    private static native String nativeDetokenize(long model, int[] ids);

    private static native long nativeNewSession(long model, int ctx, int batch, boolean contextShift, int keepTokens);

    private static native void nativeFreeSession(long session);

    private static native void nativeCancel(long session);

    private static native void nativeReset(long session);

    private static native int nativePrompt(long session, String text, boolean addSpecial, boolean parseSpecial);

    private static native void nativePromptTokens(long session, int[] ids);

    private static native int nativeChat(
            long session, String[] roles, String[] contents, boolean addGenerationPrompt, int enableThinking);

    private static native int nativeGenerate(
            long session, int maxTokens, float temperature, int topK, float topP, float minP, long seed,
            float repeatPenalty, int repeatLastN, float presencePenalty, float frequencyPenalty,
            int[] biasIds, float[] biasValues, String[] stop, TokenListener listener);

    private static native double[] nativeStats(long session);

    private static native byte[] nativeSaveState(long session);

    private static native void nativeRestoreState(long session, byte[] state);

    private static native void nativeSaveFile(long session, String path);

    private static native void nativeLoadFile(long session, String path);
}
