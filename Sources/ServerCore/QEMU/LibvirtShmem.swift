/// A libvirt domain's <shmem> device for an ivshmem server: the
/// `ivshmem-doorbell` model, the server's socket, and its interrupt
/// vectors (the vSoC mode: one per region; the multi-peer mode: -n).
public enum LibvirtShmem {
    public static func element(name: String, socketPath: String, vectors: Int) -> String {
        """
        <shmem name='\(escaped(name))'>
          <model type='ivshmem-doorbell'/>
          <server path='\(escaped(socketPath))'/>
          <msi vectors='\(vectors)' ioeventfd='on'/>
        </shmem>
        """
    }

    /// An XML attribute value in single quotes.
    private static func escaped(_ text: String) -> String {
        var escaped = ""
        for character in text {
            switch character {
            case "&": escaped += "&amp;"
            case "'": escaped += "&apos;"
            case "<": escaped += "&lt;"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}
