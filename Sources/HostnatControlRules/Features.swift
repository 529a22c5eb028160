public import HostnatProto

/// Protocol features (control.proto rule 10): what a snapshot may need beyond the base protocol,
/// and what a host says it understands in Hello. A host that lists none is a base host (it
/// predates negotiation); the controller never pushes it a snapshot that needs more, so an older
/// agent cannot silently ignore a field it does not know and ACK.
public enum ProtocolFeature {
  /// Fencing tokens, inventories in Hello, lease-mode fencing (this protocol revision).
  public static let fencing = "fencing-v1"
  /// Firewall rules with target tags (a base host would apply them to every VM).
  public static let targetTags = "firewall-target-tags"
  /// NAT rules (a base host would NAT every destination on the default IPs).
  public static let natRules = "nat-rules"
  /// The VPC fabric (VM-to-VM traffic, never NATed).
  public static let vpcFabric = "vpc-fabric"

  /// Everything this build understands, sorted.
  public static let supported: [String] = [fencing, natRules, targetTags, vpcFabric].sorted()

  /// The features a host snapshot needs.
  public static func required(by config: Hostnat_V1_HostConfig) -> [String] {
    var needs: Set<String> = []
    if config.fencingMode == .lease { needs.insert(fencing) }
    if config.firewallRules.contains(where: { !$0.targetTags.isEmpty }) { needs.insert(targetTags) }
    if config.gateways.contains(where: { !$0.rules.isEmpty }) { needs.insert(natRules) }
    if !config.vpcNetworks.isEmpty { needs.insert(vpcFabric) }
    return needs.sorted()
  }

  /// Required features a host listing `features` lacks (empty: it may have the snapshot).
  public static func missing(_ required: [String], from features: [String]) -> [String] {
    let has = Set(features)
    return required.filter { !has.contains($0) }
  }
}

extension ProtocolFeature {
  /// What a host whose hello lists no features understands: everything the protocol had before
  /// negotiation existed. Features added since must be listed to be relied on.
  public static let base: [String] = [natRules, targetTags, vpcFabric].sorted()
}
