internal import Glibc

/// A failed namespace, device or command operation: what kind of failure (`code`), a message for
/// people, and the errno behind it when a system call failed.
public struct NetnsError: Error, Sendable, Hashable, CustomStringConvertible {
  /// Kinds of failure; extensible (a struct, not an enum), so adding one breaks no switch.
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    private init(_ name: String) { self.name = name }

    /// A namespace or interface name Linux would refuse (or that could be mistaken for an option).
    public static let invalidName = Code("invalidName")
    /// A system call failed (`errno` says why).
    public static let systemCall = Code("systemCall")
    /// A command ran and exited non-zero.
    public static let commandFailed = Code("commandFailed")
    /// A command did not finish in time and was killed.
    public static let timedOut = Code("timedOut")
    /// A program (e.g. `ip`) is not installed.
    public static let notFound = Code("notFound")
    /// The operation needs something this machine lacks (root, /dev/net/tun, Linux).
    public static let unsupported = Code("unsupported")

    public var description: String { name }
  }

  public var code: Code
  public var message: String
  /// errno of the failed system call (0 when none).
  public var errno: Int32

  public init(_ code: Code, _ message: String, errno: Int32 = 0) {
    self.code = code
    self.message = message
    self.errno = errno
  }

  static func system(_ operation: String, _ errno: Int32) -> NetnsError {
    NetnsError(.systemCall, "\(operation): \(String(cString: strerror(errno))) (errno \(errno))", errno: errno)
  }

  public var description: String { "\(code): \(message)" }
}
