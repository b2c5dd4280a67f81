package android.content.res;

import android.os.ParcelFileDescriptor;
import java.io.Closeable;
import java.io.IOException;

/** Compile-only stand-in for the Android class (see ../../os/ParcelFileDescriptor.java). */
public class AssetFileDescriptor implements Closeable {
    public static final long UNKNOWN_LENGTH = -1;

    public ParcelFileDescriptor getParcelFileDescriptor() {
        throw new UnsupportedOperationException("stub");
    }

    public long getStartOffset() {
        throw new UnsupportedOperationException("stub");
    }

    public long getLength() {
        throw new UnsupportedOperationException("stub");
    }

    @Override
    public void close() throws IOException {}
}
