import HostnatAddressing

struct AliasKey: Hashable, Sendable {
  var network: NetworkID
  var base: UInt32
  var length: UInt8
}

/// Which internal addresses are taken, per network, so that a NIC cannot reuse another's primary
/// IP or overlap its alias ranges. Alias ranges are prefixes, so overlap means containment: a new
/// range R overlaps an existing one if one of R's ancestors is an alias (looked up only at the
/// prefix lengths in use) or if some alias lies at or below R (`aliasesBelow` counts them for
/// every prefix between the alias and its subnet range). Owners are instance ids.
struct AddressIndex: Sendable {
  var primary: [UInt64: Int32] = [:]
  var aliasExact: [AliasKey: Int32] = [:]
  var aliasesBelow: [AliasKey: Int32] = [:]
  /// Per network: bit l set when some alias has prefix length l.
  var aliasLengths: [UInt64] = []

  @inline(__always)
  static func key(_ network: NetworkID, _ ip: UInt32) -> UInt64 { UInt64(UInt32(bitPattern: network.raw)) << 32 | UInt64(ip) }

  func aliasOwner(containing ip: UInt32, network: NetworkID, shorterThan limit: Int = 33) -> Int32? {
    guard network.index < aliasLengths.count else { return nil }
    var lengths = aliasLengths[network.index]
    while lengths != 0 {
      let length = lengths.trailingZeroBitCount
      lengths &= lengths - 1
      guard length < limit else { break }
      if let owner = aliasExact[AliasKey(network: network, base: ip & IPv4CIDR.mask(length), length: UInt8(length))] {
        return owner
      }
    }
    return nil
  }

  mutating func insert(_ nics: IntentNICs, owner: Int32) {
    for nic in nics { primary[Self.key(nic.network, nic.primaryIP)] = owner }
    insertAliases(nics, owner: owner)
  }

  mutating func insertAliases(_ nics: IntentNICs, owner: Int32) {
    for nic in nics {
      for alias in nic.aliases {
        let length = alias.cidr.prefixLength
        aliasExact[AliasKey(network: nic.network, base: alias.cidr.first.value, length: UInt8(length))] = owner
        while aliasLengths.count <= nic.network.index { aliasLengths.append(0) }
        aliasLengths[nic.network.index] |= 1 << UInt64(length)
        for l in Int(alias.rangeLength)...length {
          aliasesBelow[AliasKey(network: nic.network, base: alias.cidr.first.value & IPv4CIDR.mask(l), length: UInt8(l)), default: 0] += 1
        }
      }
    }
  }

  mutating func remove(_ nics: IntentNICs) {
    for nic in nics {
      primary[Self.key(nic.network, nic.primaryIP)] = nil
      for alias in nic.aliases {
        let length = alias.cidr.prefixLength
        aliasExact[AliasKey(network: nic.network, base: alias.cidr.first.value, length: UInt8(length))] = nil
        for l in Int(alias.rangeLength)...length {
          let key = AliasKey(network: nic.network, base: alias.cidr.first.value & IPv4CIDR.mask(l), length: UInt8(l))
          let count = aliasesBelow[key, default: 0] - 1
          aliasesBelow[key] = count > 0 ? count : nil
        }
      }
    }
  }
}
