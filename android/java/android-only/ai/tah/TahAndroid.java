package ai.tah;

import android.content.res.AssetFileDescriptor;
import android.os.ParcelFileDescriptor;
import java.io.FileDescriptor;
import java.io.IOException;

/**
 * Loading a model from Android file descriptors, with public Android APIs only.
 * This file uses {@code android.*} classes, so it lives apart from the rest of
 * the Java API (android/java/android-only/): the host JVM build and test leave
 * it out; an app compiles it with the other files of {@code ai.tah}.
 *
 * <pre>{@code
 * // app/build.gradle: android { androidResources { noCompress += "tah" } }
 * try (AssetFileDescriptor afd = context.getAssets().openFd("model.tah")) {
 *     tah = TahAndroid.load(afd, params);   // mapped from the APK, not copied
 * }
 * }</pre>
 */
public final class TahAndroid {
    private TahAndroid() {}

    /**
     * {@code length} bytes at {@code offset} of {@code pfd} (0 = to its end). The
     * descriptor stays the caller's: close it when this returns.
     */
    public static Tah load(ParcelFileDescriptor pfd, long offset, long length, Tah.Params params) {
        if (pfd == null) throw new TahException("file descriptor is null");
        return Tah.loadFd(pfd.getFd(), offset, length, params);
    }

    /**
     * An asset stored uncompressed in the APK ({@code AssetManager.openFd}): its
     * start offset and declared length within the APK file.
     */
    public static Tah load(AssetFileDescriptor afd, Tah.Params params) {
        if (afd == null) throw new TahException("asset file descriptor is null");
        long length = afd.getLength();
        if (length < 0) length = 0; // UNKNOWN_LENGTH: to the end of the file
        return load(afd.getParcelFileDescriptor(), afd.getStartOffset(), length, params);
    }

    /** A {@link FileDescriptor}, through a public duplicate rather than its private field. */
    public static Tah load(FileDescriptor fd, long offset, long length, Tah.Params params) {
        if (fd == null) throw new TahException("file descriptor is null");
        try (ParcelFileDescriptor pfd = ParcelFileDescriptor.dup(fd)) {
            return load(pfd, offset, length, params);
        } catch (IOException e) {
            throw new TahException("file descriptor: " + e.getMessage());
        }
    }
}
