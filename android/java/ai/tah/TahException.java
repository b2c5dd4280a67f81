package ai.tah;

/** A failed tah call: a bad file, bad settings, a closed handle, a full context. */
public class TahException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public TahException(String message) {
        super(message);
    }
}
