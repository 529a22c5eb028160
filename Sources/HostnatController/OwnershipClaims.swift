import HostnatControlRules
import HostnatProto

/// Control.proto rule 9: who may hold each block, as the hosts say, against what the store
/// gives. A store restored from an old backup gives away blocks that hosts still use; the hosts'
/// inventories (their Hello, then each config they ACK) and the edge's routes (the newest
/// ownership map it was pushed, on behalf of the host each route names) say so. A block one host
/// claims is withheld from every other host the store gives it to, and from the edge's routes,
/// until the claimant ACKs a config without it (or is forgotten, or its lease ran out).
struct OwnershipClaims: Sendable, Equatable, Codable {
  /// Blocks each agent said it holds (fenced ones excluded: they carry no flow).
  var byHost: [String: Set<BlockKey>] = [:]
  /// The edge's routes, by the host they name.
  var byEdge: [String: Set<BlockKey>] = [:]
  /// Agents that said hello since this controller started (not stored).
  var reported: Set<String> = []
  /// Until the edge says hello in this run, a host gets no block it did not report holding:
  /// hosts this store never heard of may hold them, and only the edge's routes name those.
  var reconciling = false

  enum CodingKeys: String, CodingKey { case byHost, byEdge }

  /// Records a Hello's inventory.
  mutating func hello(_ hello: Hostnat_V1_Hello, kind: Hostnat_V1_HostKind) {
    if kind == .edge {
      byEdge = Dictionary(grouping: hello.blocks.filter { !$0.hostID.isEmpty }, by: \.hostID).mapValues { Set($0.map(\.key)) }
      reconciling = false
    } else {
      byHost[hello.hostID] = Set(hello.blocks.filter { $0.state != .blockFenced }.map(\.key))
      reported.insert(hello.hostID)
    }
  }

  /// The host ACKed a config holding exactly `blocks`: that is all it holds now, and the edge's
  /// claims on its behalf are superseded.
  mutating func acknowledged(_ hostID: String, holds blocks: Set<BlockKey>) {
    byHost[hostID] = blocks
    if let edge = byEdge[hostID] {
      let kept = edge.intersection(blocks)
      byEdge[hostID] = kept.isEmpty ? nil : kept
    }
  }

  /// Forgets every claim of a host (`hosts forget`, or its lease ran out in lease mode).
  mutating func forget(_ hostID: String) {
    byHost[hostID] = nil
    byEdge[hostID] = nil
  }

  /// Claims by NAT IP, for overlap checks.
  private func index() -> [String: [(block: BlockKey, host: String)]] {
    var index: [String: [(block: BlockKey, host: String)]] = [:]
    for (host, blocks) in byHost { for block in blocks { index[block.natIP, default: []].append((block, host)) } }
    for (host, blocks) in byEdge { for block in blocks { index[block.natIP, default: []].append((block, host)) } }
    return index
  }

  /// Blocks `owners` gives to a host that another host claims: (block, owner, claimant).
  func conflicts(_ owners: [(block: BlockKey, host: String)]) -> [(block: BlockKey, owner: String, claimant: String)] {
    let index = index()
    var found: [(block: BlockKey, owner: String, claimant: String)] = []
    for (block, owner) in owners {
      for claim in index[block.natIP] ?? [] where claim.host != owner && claim.block.overlaps(block) {
        found.append((block, owner, claim.host))
      }
    }
    return found
  }

  /// What to keep out of each host's config: blocks another host claims, and while reconciling,
  /// every block the host did not report holding. And what to keep out of the edge's routes:
  /// the blocks another host claims.
  func withheld(_ owners: [(block: BlockKey, host: String)]) -> (hosts: [String: Set<BlockKey>], edge: Set<BlockKey>) {
    var hosts: [String: Set<BlockKey>] = [:]
    var edge: Set<BlockKey> = []
    for conflict in conflicts(owners) {
      hosts[conflict.owner, default: []].insert(conflict.block)
      edge.insert(conflict.block)
    }
    if reconciling {
      // Hosts that have not said hello get no push until they do, and are judged then.
      for (block, owner) in owners where reported.contains(owner) && !(byHost[owner]?.contains(block) ?? false) {
        hosts[owner, default: []].insert(block)
      }
    }
    return (hosts, edge)
  }
}
