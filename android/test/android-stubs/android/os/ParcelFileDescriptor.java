package android.os;

import java.io.Closeable;
import java.io.FileDescriptor;
import java.io.IOException;

/**
 * Compile-only stand-in for the Android class: the signatures TahAndroid.java
 * uses (from the Android API reference), so run.sh can check that it compiles
 * without the Android SDK. Never run.
 */
public class ParcelFileDescriptor implements Closeable {
    public int getFd() {
        throw new UnsupportedOperationException("stub");
    }

    public static ParcelFileDescriptor dup(FileDescriptor orig) throws IOException {
        throw new UnsupportedOperationException("stub");
    }

    @Override
    public void close() throws IOException {}
}
