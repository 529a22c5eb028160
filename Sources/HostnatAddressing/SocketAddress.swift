/// An IPv4 address and port, written "a.b.c.d:port": every HOST:PORT the project reads (flags,
/// files, topology) and every UDP endpoint of the underlay.
///
/// The data plane converts it to and from `sockaddr_in`; this module stays free of I/O.
public struct SocketAddress: Hashable, Sendable, CustomStringConvertible, Codable {
  public var ip: IPv4Address
  public var port: UInt16

  public init(ip: IPv4Address, port: UInt16) {
    self.ip = ip
    self.port = port
  }

  /// Parses "a.b.c.d:port" (strict dotted quad, decimal port 0...65535, no whitespace).
  public init?(_ text: some StringProtocol) {
    guard let colon = text.lastIndex(of: ":"), let ip = IPv4Address(text[text.startIndex..<colon]) else { return nil }
    let portText = text[text.index(after: colon)...]
    guard !portText.isEmpty, portText.utf8.count <= 5, portText.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
      let port = UInt32(portText), port <= 65_535
    else { return nil }
    self.init(ip: ip, port: UInt16(port))
  }

  /// Parses a HOST:PORT flag value: an IPv4 literal or `localhost` (read as 127.0.0.1), and a port
  /// in 1...65535, or 0...65535 when `allowPortZero` (a listener that lets the kernel choose).
  /// The error names the flag and what was wrong, for the command line.
  public static func parse(_ text: String, flag: String, allowPortZero: Bool = false) throws(FieldError) -> SocketAddress {
    let host = text.hasPrefix("localhost:") ? "127.0.0.1" + text.dropFirst("localhost".count) : text
    let ports = allowPortZero ? "0-65535" : "1-65535"
    guard let address = SocketAddress(host), allowPortZero || address.port != 0 else {
      throw FieldError(field: flag, reason: "\(text.debugDescription) is not HOST:PORT with an IPv4 host and a port \(ports)")
    }
    return address
  }

  /// The host as text, for clients that take a host string (gRPC targets).
  public var host: String { ip.description }

  public var description: String { "\(ip):\(port)" }

  public init(from decoder: any Decoder) throws {
    let text = try decoder.singleValueContainer().decode(String.self)
    guard let parsed = SocketAddress(text) else {
      throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not ip:port: \(text)"))
    }
    self = parsed
  }

  public func encode(to encoder: any Encoder) throws {
    var c = encoder.singleValueContainer()
    try c.encode(description)
  }
}
