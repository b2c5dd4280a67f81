import ai.tah.Tah;
import ai.tah.TahException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Drives the JNI bridge through the Java API on a real JVM (run.sh builds and runs
 * it): the TaH fixture by token ids against the reference implementation's greedy
 * tokens and depths, and SmolLM2 through the chat API.
 *
 *   java -Djava.library.path=target/release TahTest FIXTURE.tah PROMPT_IDS EXPECT_IDS EXPECT_DEPTHS [SMOL.tah]
 */
public class TahTest {
    static int passed = 0, failed = 0;

    static void check(boolean ok, String what) {
        if (ok) {
            passed++;
            System.out.println("ok   " + what);
        } else {
            failed++;
            System.out.println("FAIL " + what);
        }
    }

    static int[] ints(String csv) {
        return Arrays.stream(csv.split(",")).mapToInt(Integer::parseInt).toArray();
    }

    static int[] toArray(List<Integer> l) {
        return l.stream().mapToInt(Integer::intValue).toArray();
    }

    public static void main(String[] args) {
        String fixture = args[0];
        int[] prompt = ints(args[1]);
        int[] expectIds = ints(args[2]);
        int[] expectDepths = ints(args[3]);
        String smol = args.length > 4 ? args[4] : null;
        System.out.println("tah " + Tah.version());

        // The fixture: id-only TaH model, greedy, the reference's tokens and depths.
        Tah.Params p = new Tah.Params();
        p.threads = 2;
        try (Tah tah = Tah.load(fixture, p); Tah.Session s = tah.newSession()) {
            check(tah.vocabSize() == 512, "fixture vocab size 512");
            s.promptTokens(prompt);
            List<Integer> ids = new ArrayList<>(), depths = new ArrayList<>();
            int n = s.generate(expectIds.length, Tah.Sampling.greedy(), (piece, id, depth) -> {
                ids.add(id);
                depths.add(depth);
                return true;
            });
            check(n == expectIds.length, "fixture generated " + n + " tokens");
            check(Arrays.equals(toArray(ids), expectIds), "fixture tokens match the reference " + ids);
            check(Arrays.equals(toArray(depths), expectDepths), "fixture depths match the reference " + depths);
            Tah.Stats st = s.stats();
            System.out.println("     " + st);
            check(st.promptTokens == prompt.length && st.generatedTokens == n, "fixture stats counts");
            check(st.kvBytesDepth1 > 0 && st.kvBytesDepth2 > 0, "fixture KV bytes at both depths");
            check(st.stopReason == 2, "fixture stopped at max tokens");

            // A listener that stops after 3 tokens.
            s.reset();
            s.promptTokens(prompt);
            int[] count = {0};
            int m = s.generate(10, Tah.Sampling.greedy(), (piece, id, depth) -> ++count[0] < 3);
            check(m == 3 && count[0] == 3 && s.stats().stopReason == 4, "listener stops generation");

            // A listener exception propagates and stops generation.
            s.reset();
            s.promptTokens(prompt);
            try {
                s.generate(10, Tah.Sampling.greedy(), (piece, id, depth) -> {
                    throw new IllegalStateException("from listener");
                });
                check(false, "listener exception propagates");
            } catch (IllegalStateException e) {
                check("from listener".equals(e.getMessage()), "listener exception propagates");
            }

            // Errors are TahExceptions, not crashes.
            try {
                s.promptTokens(new int[] {99999});
                check(false, "bad token id throws");
            } catch (TahException e) {
                check(e.getMessage().contains("vocabulary"), "bad token id throws: " + e.getMessage());
            }
            try {
                s.chat(new Tah.Message[] {new Tah.Message("user", "hi")}, true, null);
                check(false, "chat without a template throws");
            } catch (TahException e) {
                check(true, "chat without a template throws: " + e.getMessage());
            }
        }
        try {
            Tah.load("/nonexistent/model.tah", null);
            check(false, "missing file throws");
        } catch (TahException e) {
            check(true, "missing file throws: " + e.getMessage());
        }
        Tah.Params bad = new Tah.Params();
        bad.threshold = 2f;
        try {
            Tah.load(fixture, bad);
            check(false, "threshold 2 throws");
        } catch (TahException e) {
            check(e.getMessage().contains("threshold"), "threshold 2 throws: " + e.getMessage());
        }
        Tah closed = Tah.load(fixture, null);
        Tah.Session kept = closed.newSession(64);
        closed.close();
        kept.promptTokens(prompt);
        check(kept.generate(2, Tah.Sampling.greedy(), null) == 2, "a session outlives its model handle");
        kept.close();
        try {
            kept.reset();
            check(false, "closed session throws");
        } catch (TahException e) {
            check(true, "closed session throws");
        }

        // SmolLM2 through the chat API.
        if (smol != null) {
            Tah.Params sp = new Tah.Params();
            sp.threads = 2;
            sp.contextSize = 512;
            try (Tah tah = Tah.load(smol, sp); Tah.Session s = tah.newSession()) {
                int[] t = tah.tokenize("What is 12 * 7?", false);
                check(t.length > 0 && tah.detokenize(t).equals("What is 12 * 7?"), "tokenize / detokenize round trip");
                Tah.Message[] conv = {new Tah.Message("user", "What is 12 * 7? Answer briefly.")};
                int queued = s.chat(conv, true, null);
                StringBuilder sb = new StringBuilder();
                int n = s.generate(24, Tah.Sampling.greedy(), (piece, id, depth) -> {
                    sb.append(piece);
                    return true;
                });
                System.out.println("     answer: " + sb.toString().replace("\n", "\\n"));
                Tah.Stats st = s.stats();
                System.out.println("     " + st);
                check(queued > 10 && n > 0 && sb.length() > 0, "SmolLM2 chat answers (" + n + " tokens)");
                check(st.promptTokens == queued && st.hardTokens == 0, "SmolLM2 stats (plain model: no hard tokens)");
                // A second turn feeds only the new suffix.
                Tah.Message[] conv2 = {
                    conv[0], new Tah.Message("assistant", sb.toString()), new Tah.Message("user", "And 12 * 8?")
                };
                int queued2 = s.chat(conv2, true, null);
                check(queued2 > 0 && queued2 < queued + sb.length(), "second turn queues only the suffix (" + queued2 + ")");
                check(s.generate(4, Tah.Sampling.greedy(), null) > 0, "second turn generates");
            }
        }
        System.out.println(passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }
}
