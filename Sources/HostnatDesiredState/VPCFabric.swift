import HostnatAddressing
public import HostnatProto
import SwiftProtobuf

/// The VPC fabric: how VM-to-VM traffic, which never uses NAT, is told apart and carried between
/// hosts. Each network gets a tag; a network's subnet routes are its own subnets' ranges and
/// those of the networks it peers with; the edge learns which host owns each internal address,
/// per sending network.
///
/// A peering is in force once either network lists the other (`networks peerings create` names
/// one side). Peering is not transitive: A–B and B–C do not connect A and C.
public enum VPCFabric {
  /// Each network's tag: the fabric id the controller stored with it at creation (never reused,
  /// so creating or deleting a network renumbers nothing). A network without one (an intent
  /// built by hand, in a test) is numbered after the highest stored id, by name.
  public static func ids(_ stored: StoredIntent) -> [String: UInt32] {
    var ids: [String: UInt32] = [:]
    var next = (stored.networks.map(\.fabricID).max() ?? 0) + 1
    for network in stored.networks.sorted(by: { $0.name < $1.name }) {
      if network.fabricID != 0 {
        ids[network.name] = network.fabricID
      } else {
        ids[network.name] = next
        next += 1
      }
    }
    return ids
  }

  /// The networks whose subnet routes `network` has: itself and its peers, itself first.
  public static func reach(_ network: String, _ stored: StoredIntent) -> [String] {
    var peers = Set(stored.networks.first { $0.name == network }?.peerNetworks ?? [])
    for other in stored.networks where other.peerNetworks.contains(network) { peers.insert(other.name) }
    peers.remove(network)
    return [network] + peers.sorted()
  }

  /// The CIDRs `network` reaches inside the VPC: primary and secondary ranges of its subnets and
  /// of its peers' subnets (connector subnets included).
  public static func internalRanges(_ network: String, _ stored: StoredIntent) -> [String] {
    var ranges: [String] = []
    for net in reach(network, stored) {
      for subnet in stored.subnets where subnet.network == net {
        ranges.append(subnet.ipCidrRange)
        ranges += subnet.secondaryRanges.map(\.ipCidrRange)
      }
    }
    return ranges.filter { IPv4CIDR($0) != nil }
  }

  /// The host-side view of the networks named.
  public static func networks(_ names: Set<String>, _ stored: StoredIntent, ids: [String: UInt32]) -> [Hostnat_V1_VpcNetwork] {
    names.sorted().compactMap { name in
      guard let id = ids[name] else { return nil }
      return .with {
        $0.network = name
        $0.id = id
        $0.internalRanges = internalRanges(name, stored)
      }
    }
  }

  /// The edge's fabric routes: for every network, each internal address it reaches (a NIC's
  /// primary IP, or an alias range) to the host of its VM. Hosts that never said hello are left
  /// out until they do. Of overlapping destinations in one network's view (peered networks whose
  /// ranges collide, which Google refuses to peer) the first by address is kept, the network's
  /// own VM at equal addresses.
  public static func routes(_ stored: StoredIntent, underlays: [String: String], ids: [String: UInt32]) -> [Hostnat_V1_VpcRoute] {
    let networkOfSubnet = Dictionary(stored.subnets.map { ($0.name, $0.network) }, uniquingKeysWith: { first, _ in first })
    var owned: [String: [(cidr: IPv4CIDR, instance: String, host: String, underlay: String)]] = [:]
    for instance in stored.instances.sorted(by: { $0.name < $1.name }) {
      guard let underlay = underlays[instance.host], !underlay.isEmpty else { continue }
      for nic in instance.networkInterfaces {
        guard let network = networkOfSubnet[nic.subnet] else { continue }
        let cidrs = [nic.networkIp + "/32"] + nic.aliasIpRanges.map(\.ipCidrRange)
        for text in cidrs {
          guard let cidr = IPv4CIDR(text) else { continue }
          owned[network, default: []].append((cidr, instance.name, instance.host, underlay))
        }
      }
    }
    var routes: [Hostnat_V1_VpcRoute] = []
    for network in stored.networks.map(\.name).sorted() {
      guard let id = ids[network] else { continue }
      // One sorted sweep (O(n log n) for large labs): by first address, the network's own VMs
      // before a peer's at the same address; whatever overlaps an address kept already is left out.
      let candidates = reach(network, stored).enumerated().flatMap { rank, net in (owned[net] ?? []).map { (rank: rank == 0 ? 0 : 1, entry: $0) } }
        .sorted { ($0.entry.cidr.first.value, $0.rank) < ($1.entry.cidr.first.value, $1.rank) }
      var end: Int64 = -1
      for (_, entry) in candidates where Int64(entry.cidr.first.value) > end {
        end = Int64(entry.cidr.last.value)
        routes.append(.with {
          $0.networkID = id
          $0.destination = "\(entry.cidr)"
          $0.instance = entry.instance
          $0.hostID = entry.host
          $0.underlayAddress = entry.underlay
        })
      }
    }
    return routes
  }
}
