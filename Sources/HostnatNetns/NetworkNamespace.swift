internal import Glibc
internal import Synchronization

/// A named Linux network namespace, as `ip netns` manages them (a bind mount at
/// /run/netns/NAME). Creating and deleting need root (CAP_SYS_ADMIN).
///
/// The value is only a name: `create` makes the namespace, `delete` removes it (and every device
/// in it), `exists` checks. Code runs inside it three ways: `exec` (a command, through
/// `ip netns exec`), `ip` (an `ip -n NAME` command), and `run` (a Swift closure on a thread that
/// entered the namespace with setns(2): sockets and TUN devices it opens stay in the namespace
/// after the thread ends, and can be used from any thread).
public struct NetworkNamespace: Sendable, Hashable, CustomStringConvertible {
  /// Longest name accepted. Linux allows any file name, but names show up in `ip netns`, paths and
  /// logs; hostnat keeps them short (interface names, which are limited to 15 bytes, are separate
  /// and per namespace: see `TUNDevice`).
  public static let maxNameLength = 48
  /// Where `ip netns` keeps its namespaces.
  public static let directory = "/run/netns"

  public let name: String

  /// Refers to the namespace `name` (it need not exist). Names are 1...48 of `A-Z a-z 0-9 . _ -`,
  /// not starting with `-` or `.`.
  public init(name: String) throws(NetnsError) {
    guard Self.isValidName(name) else {
      throw NetnsError(.invalidName, "namespace name \"\(name)\": use 1...\(Self.maxNameLength) of A-Z a-z 0-9 . _ -, not starting with - or .")
    }
    self.name = name
  }

  /// "hostnat-LAB-ROLE" (e.g. `hostnat-lab1-vm-a`, `hostnat-lab1-inet`), checked like any name.
  public static func labNamespace(lab: String, role: String) throws(NetnsError) -> NetworkNamespace {
    try NetworkNamespace(name: "hostnat-\(lab)-\(role)")
  }

  static func isValidName(_ name: String) -> Bool {
    let bytes = Array(name.utf8)
    guard (1...maxNameLength).contains(bytes.count), bytes[0] != UInt8(ascii: "-"), bytes[0] != UInt8(ascii: ".") else {
      return false
    }
    return bytes.allSatisfy { b in
      (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == UInt8(ascii: ".")
        || b == UInt8(ascii: "_") || b == UInt8(ascii: "-")
    }
  }

  public var description: String { name }

  /// /run/netns/NAME.
  public var path: String { Self.directory + "/" + name }

  public var exists: Bool { access(path, F_OK) == 0 }

  // MARK: - Life cycle

  /// Creates the namespace (`ip netns add`) and brings up its loopback. Fails when it already
  /// exists (`delete` it first to start clean); a half-made namespace is removed again.
  @discardableResult
  public static func create(named name: String) throws(NetnsError) -> NetworkNamespace {
    let ns = try NetworkNamespace(name: name)
    try Command.check([try ipPath(), "netns", "add", name])
    do {
      try ns.bringUpLoopback()
    } catch {
      try? ns.delete()
      throw error
    }
    return ns
  }

  /// Removes the namespace's name; a no-op when it does not exist. The namespace itself (and every
  /// device in it) goes when nothing holds it any more: a TUN descriptor or a socket opened inside
  /// keeps it alive, nameless, until closed, so close those first (`BridgedNamespace.shutdown` does).
  public func delete() throws(NetnsError) {
    guard exists else { return }
    let result = try Command.run([try Self.ipPath(), "netns", "delete", name])
    if !result.succeeded && exists { throw NetnsError(.commandFailed, result.description) }
  }

  /// `ip -n NAME link set lo up`.
  public func bringUpLoopback() throws(NetnsError) {
    try ip(["link", "set", "lo", "up"])
  }

  // MARK: - Running things inside

  /// Runs `ip -n NAME ARGS...`, throwing unless it exits 0.
  @discardableResult
  public func ip(_ arguments: [String], timeout: Duration = .seconds(10)) throws(NetnsError) -> CommandResult {
    try Command.check([try Self.ipPath(), "-n", name] + arguments, timeout: timeout)
  }

  /// Runs `command` inside the namespace (`ip netns exec NAME COMMAND...`), waiting at most
  /// `timeout`. A non-zero exit is returned, not thrown. The program is resolved here first, so
  /// `ip netns exec` gets an absolute path.
  public func exec(_ command: [String], timeout: Duration = .seconds(10)) throws(NetnsError) -> CommandResult {
    guard let program = command.first else { throw NetnsError(.notFound, "empty command") }
    guard let resolved = Command.find(program) else { throw NetnsError(.notFound, "\(program) is not installed (or not in PATH)") }
    return try Command.run([try Self.ipPath(), "netns", "exec", name, resolved] + command.dropFirst(), timeout: timeout)
  }

  /// Runs `body` on a new thread that has entered this namespace (setns(2) with CLONE_NEWNET),
  /// waits for it and returns its result. Sockets and devices opened by `body` belong to the
  /// namespace for their whole life. Other threads are not affected.
  public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
    let path = self.path
    let outcome = Mutex<Result<T, any Error>?>(nil)
    try NamespaceThread.runJoined {
      let fd = open(path, O_RDONLY | O_CLOEXEC)
      guard fd >= 0 else {
        let e = errno
        outcome.withLock { $0 = .failure(NetnsError.system("open \(path)", e)) }
        return
      }
      let rc = SystemCalls.setns(fd, SystemCalls.cloneNewNet)
      let e = errno
      close(fd)
      guard rc == 0 else {
        outcome.withLock { $0 = .failure(NetnsError.system("setns \(path)", e)) }
        return
      }
      let result = Result { try body() }
      outcome.withLock { $0 = result }
    }
    guard let result = outcome.withLock({ $0 }) else { throw NetnsError(.systemCall, "namespace thread ended without a result") }
    return try result.get()
  }

  // MARK: - Availability

  /// Nil when this process can make namespaces and TUN devices (Linux, root, `ip` with netns
  /// support, /dev/net/tun); otherwise why not, for a test's skip message.
  public static func unavailableReason() -> String? {
    #if os(Linux)
      if geteuid() != 0 { return "needs root (creates network namespaces and TUN devices)" }
      if (try? ipPath()) == nil { return "needs iproute2's ip (not found)" }
      if access("/dev/net/tun", R_OK | W_OK) != 0 { return "needs /dev/net/tun" }
      if access("/proc/self/ns/net", F_OK) != 0 { return "kernel without network namespaces" }
      return nil
    #else
      return "network namespaces are Linux only"
    #endif
  }

  /// Namespaces `ip netns` lists (names only).
  public static func list() -> [String] {
    guard let dir = opendir(directory) else { return [] }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
      let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
        String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
      }
      if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
  }

  static func ipPath() throws(NetnsError) -> String {
    guard let path = Command.find("ip") else { throw NetnsError(.notFound, "iproute2's ip is not installed") }
    return path
  }
}

/// setns(2) and friends, looked up at run time: glibc declares them behind _GNU_SOURCE, which
/// Swift's Glibc module does not define (the same reason the data plane looks up recvmmsg).
enum SystemCalls {
  static let cloneNewNet: Int32 = 0x4000_0000

  typealias SetnsFn = @convention(c) (Int32, Int32) -> Int32
  static let setns: SetnsFn = {
    guard let sym = dlsym(dlopen(nil, RTLD_NOW), "setns") else { fatalError("libc has no setns") }
    return unsafeBitCast(sym, to: SetnsFn.self)
  }()
}

/// A short-lived pthread for work that must happen inside a namespace (setns changes only the
/// calling thread; doing it on a pool thread would leak the namespace into unrelated work).
enum NamespaceThread {
  private final class Box {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
  }

  static func runJoined(_ body: @escaping @Sendable () -> Void) throws(NetnsError) {
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var tid = pthread_t()
    let rc = pthread_create(
      &tid, nil,
      { ctx in
        let box = Unmanaged<Box>.fromOpaque(ctx!).takeRetainedValue()
        box.body()
        return nil
      }, box)
    guard rc == 0 else {
      Unmanaged<Box>.fromOpaque(box).release()
      throw NetnsError.system("pthread_create", rc)
    }
    pthread_join(tid, nil)
  }
}
