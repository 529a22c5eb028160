public import HostnatAddressing
public import HostnatInternet
import HostnatPackets

/// The Internet's services by the names the topology and the `--server` flags use.
public enum ServiceNames {
  static let table: [(String, ServiceKind)] = [
    ("udp-echo", .udpEcho), ("tcp-echo", .tcpEcho), ("icmp-echo", .icmpEcho),
    ("whoami", .whoami), ("stun", .stun), ("filtering-probe", .filteringProbe),
  ]
  public static var all: [String] { table.map(\.0) }
  public static func kind(_ name: String) -> ServiceKind? { table.first { $0.0 == name }?.1 }
  public static func name(_ kind: ServiceKind) -> String { table.first { $0.1 == kind }?.0 ?? "\(kind)" }

  /// Parses `IP=service,service` (the `--server` flag).
  public static func parseServer(_ text: String) throws(FieldError) -> ServerSpec {
    let parts = text.split(separator: "=", maxSplits: 1)
    guard parts.count == 2, let ip = IPv4Address(parts[0]) else {
      throw FieldError(field: "--server", reason: "\(text.debugDescription) is not IP=SERVICE,SERVICE")
    }
    var services: Set<ServiceKind> = []
    for name in parts[1].split(separator: ",") {
      guard let kind = kind(String(name)) else {
        throw FieldError(field: "--server", reason: "unknown service \(name) (known: \(all.joined(separator: ", ")))")
      }
      services.insert(kind)
    }
    return ServerSpec(ip: ip, services: services)
  }
}
