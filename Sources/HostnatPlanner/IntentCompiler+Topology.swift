import HostnatAddressing

// Networks, subnetworks, routers and auto-allocation pools.

/// A subnetwork with its ranges parsed, and the gateway translating each range.
struct IntentSubnet: Sendable {
  var name: String
  var network: NetworkID
  var region: String
  var primary: IPv4CIDR
  var secondaryNames: [String]
  var secondaries: [IPv4CIDR]
  /// The gateway translating the primary range, nil for none.
  var primaryGateway: GatewayID? = nil
  /// The gateway translating each secondary range, nil for none.
  var secondaryGateways: [GatewayID?]
}

extension IntentCompiler {
  mutating func compileNetworks() throws(PlannerValidationError) {
    for (i, network) in source.networks.enumerated() {
      guard !network.name.isEmpty else { throw fail("networks[\(i)].name", "must not be empty") }
      guard result.networkIndex[network.name] == nil else { throw fail("networks[\(i)].name", "duplicate network name '\(network.name)'") }
      result.networkIndex[network.name] = NetworkID(i)
    }
  }

  mutating func compileSubnets() throws(PlannerValidationError) {
    for (i, subnet) in source.subnetworks.enumerated() {
      guard !subnet.name.isEmpty else { throw fail("subnetworks[\(i)].name", "must not be empty") }
      let path = "subnetworks[\(subnet.name)]"
      guard result.subnetIndex[subnet.name] == nil else { throw fail("subnetworks[\(i)].name", "duplicate subnetwork name '\(subnet.name)'") }
      guard let network = result.networkIndex[subnet.network] else { throw fail("\(path).network", "unknown network '\(subnet.network)'") }
      guard !subnet.region.isEmpty else { throw fail("\(path).region", "must not be empty") }
      let primary = try parseCIDR(subnet.ipCidrRange, field: "\(path).ipCidrRange")
      addRange(primary, field: "\(path).ipCidrRange", network: network)
      var names: [String] = []
      var secondaries: [IPv4CIDR] = []
      for (r, range) in subnet.secondaryIpRanges.enumerated() {
        let rangePath = "\(path).secondaryIpRanges[\(r)]"
        guard !range.rangeName.isEmpty else { throw fail("\(rangePath).rangeName", "must not be empty") }
        guard !names.contains(range.rangeName) else { throw fail("\(rangePath).rangeName", "duplicate range name '\(range.rangeName)'") }
        let cidr = try parseCIDR(range.ipCidrRange, field: "\(rangePath).ipCidrRange")
        names.append(range.rangeName)
        secondaries.append(cidr)
        addRange(cidr, field: "\(rangePath).ipCidrRange", network: network)
      }
      result.subnetIndex[subnet.name] = SubnetID(result.subnets.count)
      result.subnets.append(
        IntentSubnet(
          name: subnet.name, network: network, region: subnet.region, primary: primary, secondaryNames: names,
          secondaries: secondaries, secondaryGateways: Array(repeating: nil, count: names.count)))
    }
  }

  private mutating func addRange(_ cidr: IPv4CIDR, field: String, network: NetworkID) {
    rangesByNetwork[network, default: []].append((cidr, field, rangesByNetwork[network]?.count ?? 0))
  }

  /// Prefixes overlap iff one contains the other: after sorting by first address, a range
  /// overlaps an earlier one iff it starts before the furthest end seen so far.
  func checkRangeOverlaps() throws(PlannerValidationError) {
    for network in rangesByNetwork.keys.sorted() {
      let ranges = rangesByNetwork[network]!.sorted { ($0.cidr.first.value, $0.cidr.prefixLength) < ($1.cidr.first.value, $1.cidr.prefixLength) }
      var widest = ranges[0]
      for range in ranges.dropFirst() {
        if range.cidr.first.value <= widest.cidr.last.value {
          // Blame whichever of the two comes later in the intent.
          let (later, earlier) = range.order > widest.order ? (range, widest) : (widest, range)
          throw fail(later.field, "\(later.cidr) overlaps \(earlier.cidr) (\(earlier.field))")
        }
        if range.cidr.last.value > widest.cidr.last.value { widest = range }
      }
    }
  }

  mutating func compileRouters() throws(PlannerValidationError) {
    for (i, router) in source.routers.enumerated() {
      guard !router.name.isEmpty else { throw fail("routers[\(i)].name", "must not be empty") }
      guard routers[router.name] == nil else { throw fail("routers[\(i)].name", "duplicate router name '\(router.name)'") }
      guard let network = result.networkIndex[router.network] else { throw fail("routers[\(router.name)].network", "unknown network '\(router.network)'") }
      guard !router.region.isEmpty else { throw fail("routers[\(router.name)].region", "must not be empty") }
      routers[router.name] = (network, router.region)
    }
  }

  mutating func compileAutoPools() throws(PlannerValidationError) {
    for (i, pool) in source.autoNatIpPools.enumerated() {
      guard !pool.region.isEmpty else { throw fail("autoNatIpPools[\(i)].region", "must not be empty") }
      guard result.autoPools[pool.region] == nil else { throw fail("autoNatIpPools[\(i)].region", "duplicate pool for region '\(pool.region)'") }
      var addresses: [UInt32] = []
      for (j, text) in pool.natIps.enumerated() {
        let field = "autoNatIpPools[\(pool.region)].natIps[\(j)]"
        let address = try parseAddress(text, field: field)
        if let region = result.autoPoolRegion[address] {
          throw fail(field, "\(text) is already in the auto-allocation pool of region '\(region)'")
        }
        result.autoPoolRegion[address] = pool.region
        addresses.append(address)
      }
      result.autoPools[pool.region] = addresses
    }
  }
}
