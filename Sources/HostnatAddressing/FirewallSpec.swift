/// Firewall rule fields as the admin API writes them ("tcp", "8000-8080"), parsed the same way
/// by the controller (to validate) and by hosts (to enforce).
public enum FirewallSpec {
  /// The IP protocol number for "tcp", "udp", "icmp" or a number; `.some(nil)` for "all" (or
  /// empty); nil when the name is none of these.
  public static func protocolNumber(_ name: String) -> UInt8?? {
    switch name.lowercased() {
    case "tcp": return .some(6)
    case "udp": return .some(17)
    case "icmp": return .some(1)
    case "all", "": return .some(nil)
    default: return UInt8(name).map { .some($0) }
    }
  }

  /// "80" or "8000-8080"; nil when malformed or reversed.
  public static func portRange(_ text: String) -> ClosedRange<UInt16>? {
    let parts = text.split(separator: "-", omittingEmptySubsequences: false)
    guard (1...2).contains(parts.count), let low = UInt16(parts[0]), let high = UInt16(parts[parts.count - 1]), low <= high else {
      return nil
    }
    return low...high
  }
}
