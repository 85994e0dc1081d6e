import LinuxSystem
import CLibUV

/// A failed libuv call (libuv returns negative UV_E* codes, not errno).
public struct UVError: Error, Equatable, Sendable, CustomStringConvertible {
    public var operation: String
    public var code: Int32

    public var description: String { "\(operation): \(String(cString: uv_strerror(code)))" }
}
