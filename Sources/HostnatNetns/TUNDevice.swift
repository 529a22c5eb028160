public import HostnatAddressing
internal import Glibc
import HostnatPackets
internal import Synchronization

/// A TUN device (IFF_TUN | IFF_NO_PI: whole IPv4/IPv6 packets, no packet-info prefix) living in a
/// network namespace, and its file descriptor in this process (non-blocking).
///
/// The device is not persistent: it disappears when `close` is called (or this object is freed),
/// or when its namespace is deleted. Configuration goes through `ip -n NAMESPACE`.
public final class TUNDevice: Sendable {
  /// Linux's IFNAMSIZ is 16 including the terminating zero.
  public static let maxNameLength = 15
  /// The name hostnat gives its devices (names are per namespace, so every VM can use it).
  public static let defaultName = "hostnat0"

  public let name: String
  public let namespace: NetworkNamespace
  private let fdStore: Atomic<Int32>

  /// The descriptor (-1 once closed).
  public var fileDescriptor: Int32 { fdStore.load(ordering: .relaxed) }

  /// Creates the device `name` inside `namespace` (which must exist): /dev/net/tun is opened on a
  /// thread that entered the namespace, so the device is born there. The device starts down; see
  /// `configure`.
  public init(name: String = TUNDevice.defaultName, in namespace: NetworkNamespace) throws(NetnsError) {
    guard Self.isValidName(name) else {
      throw NetnsError(.invalidName, "interface name \"\(name)\": 1...\(Self.maxNameLength) bytes of A-Z a-z 0-9 . _ - (not . or ..)")
    }
    guard namespace.exists else { throw NetnsError(.unsupported, "namespace \(namespace) does not exist") }
    let fd: Int32
    do {
      fd = try namespace.run { () throws(NetnsError) -> Int32 in try Self.openTun(name: name) }
    } catch let error as NetnsError {
      throw error
    } catch {
      throw NetnsError(.systemCall, "\(error)")
    }
    self.name = name
    self.namespace = namespace
    fdStore = Atomic(fd)
  }

  deinit { close() }

  static func isValidName(_ name: String) -> Bool {
    let bytes = Array(name.utf8)
    guard (1...maxNameLength).contains(bytes.count), name != ".", name != ".." else { return false }
    return bytes.allSatisfy { b in
      (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == UInt8(ascii: ".")
        || b == UInt8(ascii: "_") || b == UInt8(ascii: "-")
    }
  }

  // <linux/if_tun.h>
  static let iffTun: Int16 = 0x0001
  static let iffNoPI: Int16 = 0x1000
  /// _IOW('T', 202, int)
  static let tunSetIff: UInt = 0x4004_54CA

  private static func openTun(name: String) throws(NetnsError) -> Int32 {
    let fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK)
    guard fd >= 0 else { throw NetnsError.system("open /dev/net/tun", errno) }
    // struct ifreq: char ifr_name[16]; then a union whose first member here is short ifr_flags.
    var ifr = [UInt8](repeating: 0, count: 40)
    for (i, b) in name.utf8.enumerated() { ifr[i] = b }
    let flags = UInt16(bitPattern: iffTun | iffNoPI)
    withUnsafeBytes(of: flags) { ifr[16] = $0[0]; ifr[17] = $0[1] }  // host byte order
    let rc = ifr.withUnsafeMutableBytes { ioctl(fd, tunSetIff, $0.baseAddress!) }
    guard rc == 0 else {
      let e = errno
      Glibc.close(fd)
      throw NetnsError.system("TUNSETIFF \(name)", e)
    }
    return fd
  }

  // MARK: - Configuration (ip -n NAMESPACE ...)

  /// Adds `address/prefixLength`, sets the MTU, brings the device up and adds `routes` through it
  /// (0.0.0.0/0 is the default route). A TUN device is point-to-point: routes need no gateway.
  public func configure(address: IPv4Address, prefixLength: Int, mtu: Int, routes: [IPv4CIDR] = []) throws(NetnsError) {
    try addAddress(address, prefixLength: prefixLength)
    try setMTU(mtu)
    try setUp()
    for route in routes { try addRoute(route) }
  }

  public func addAddress(_ address: IPv4Address, prefixLength: Int) throws(NetnsError) {
    guard (0...32).contains(prefixLength) else { throw NetnsError(.invalidName, "prefix length \(prefixLength)") }
    try namespace.ip(["address", "add", "\(address)/\(prefixLength)", "dev", name])
  }

  public func setMTU(_ mtu: Int) throws(NetnsError) {
    guard (68...65_535).contains(mtu) else { throw NetnsError(.invalidName, "MTU \(mtu) outside 68...65535") }
    try namespace.ip(["link", "set", "dev", name, "mtu", String(mtu)])
  }

  public func setUp() throws(NetnsError) {
    try namespace.ip(["link", "set", "dev", name, "up"])
  }

  /// Routes `destination` (0.0.0.0/0: the default route) out of this device.
  public func addRoute(_ destination: IPv4CIDR) throws(NetnsError) {
    let target = destination.prefixLength == 0 ? "default" : destination.description
    try namespace.ip(["route", "replace", target, "dev", name])
  }

  // MARK: - Packets

  /// Reads one packet into `buffer`. Returns its length, 0 when none is waiting (the descriptor is
  /// non-blocking), or throws. A packet longer than `buffer` is cut (the rest is lost), so pass a
  /// buffer of at least the MTU.
  public func read(into buffer: UnsafeMutableRawBufferPointer) throws(NetnsError) -> Int {
    while true {
      let n = Glibc.read(fileDescriptor, buffer.baseAddress, buffer.count)
      if n >= 0 { return n }
      let e = errno
      if e == EINTR { continue }
      if e == EAGAIN || e == EWOULDBLOCK { return 0 }
      throw NetnsError.system("read \(name)", e)
    }
  }

  /// Writes one whole packet; 0 on success, else the errno (EAGAIN: the device queue is full).
  public func write(_ packet: UnsafeRawBufferPointer) -> Int32 {
    while true {
      let n = Glibc.write(fileDescriptor, packet.baseAddress, packet.count)
      if n >= 0 { return 0 }
      let e = errno
      if e != EINTR { return e }
    }
  }

  /// Waits up to `timeoutMilliseconds` until a `read` would not block: a packet is waiting, or the
  /// device failed (e.g. its namespace was deleted; `read` then throws). False on timeout or once
  /// the descriptor is closed.
  public func waitReadable(timeoutMilliseconds: Int32) -> Bool {
    let fd = fileDescriptor
    guard fd >= 0 else { return false }
    var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    let n = poll(&p, 1, timeoutMilliseconds)
    return n > 0 && p.revents & Int16(POLLIN | POLLERR | POLLHUP | POLLNVAL) != 0
  }

  /// Closes the descriptor, which removes the device (idempotent). Stop bridges using it first.
  public func close() {
    let fd = fdStore.exchange(-1, ordering: .acquiringAndReleasing)
    if fd >= 0 { Glibc.close(fd) }
  }
}
