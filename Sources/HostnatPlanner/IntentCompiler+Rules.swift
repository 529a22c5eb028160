// NAT rules, and the NAT IP claims shared by gateways and rules.

/// One NAT rule of a gateway. Its IPs form a pool of their own (`PoolID.rule`).
struct IntentRule: Sendable {
  var gateway: GatewayID
  var ruleNumber: Int
  /// `NATRuleMatch.destinationRanges` of the rule's match.
  var destinations: [String]
  var active: [UInt32]
  var drained: [UInt32]
}

extension IntentCompiler {
  /// The gateway's rules, sorted by rule number (their pools are numbered that way). Their IPs
  /// are checked in intent order against every address seen so far, so a clash is reported at
  /// the later one.
  mutating func compileRules(_ spec: NATGateway, _ gateway: GatewayID, path: String) throws(PlannerValidationError) -> [IntentRule] {
    var ruleNumbers: [Int: Int] = [:]
    for (k, rule) in spec.rules.enumerated() {
      // Cloud NAT allows 0; hostnat's hosts use rule number 0 for the gateway's default IPs.
      guard NATRule.validNumbers.contains(rule.ruleNumber) else {
        throw fail("\(path).rules[\(k)].ruleNumber", "must be between \(NATRule.validNumbers.lowerBound) and \(NATRule.validNumbers.upperBound) (got \(rule.ruleNumber); 0 stands for the gateway's default IPs)")
      }
      if let earlier = ruleNumbers.updateValue(k, forKey: rule.ruleNumber) {
        throw fail("\(path).rules[\(k)].ruleNumber", "duplicate rule number \(rule.ruleNumber) (also rules[\(earlier)])")
      }
    }
    var rules: [IntentRule] = []
    for rule in spec.rules { rules.append(try compileRule(rule, of: spec.name, gateway, path: "\(path).rules[\(rule.ruleNumber)]")) }
    return rules.sorted { $0.ruleNumber < $1.ruleNumber }
  }

  private mutating func compileRule(_ rule: NATRule, of gatewayName: String, _ gateway: GatewayID, path: String) throws(PlannerValidationError) -> IntentRule {
    let destinations: [String]
    do {
      destinations = try NATRuleMatch.destinationRanges(rule.match)
    } catch {
      throw fail("\(path).match", error.reason)
    }
    if rule.sourceNatActiveIps.isEmpty && rule.sourceNatDrainIps.isEmpty {
      throw fail("\(path).sourceNatActiveIps", "a rule needs at least one NAT IP")
    }
    let (active, drained) = try claimNatIps(
      path: path, active: ("sourceNatActiveIps", rule.sourceNatActiveIps), drained: ("sourceNatDrainIps", rule.sourceNatDrainIps),
      owner: NATIPOwner(gateway: gatewayName, rule: rule.ruleNumber))
    // Rule pools take their (static) port policy from the gateway: `CompiledIntent.policy(of:)`.
    return IntentRule(gateway: gateway, ruleNumber: rule.ruleNumber, destinations: destinations, active: active, drained: drained)
  }

  /// The IPs of one pool (the gateway's default IPs or a rule's): parsed, owned by no other
  /// pool and in no auto-allocation pool; each is claimed for `owner`.
  mutating func claimNatIps(
    path: String, active activeList: (name: String, texts: [String]), drained drainedList: (name: String, texts: [String]),
    owner me: NATIPOwner
  ) throws(PlannerValidationError) -> (active: [UInt32], drained: [UInt32]) {
    var active: [UInt32] = []
    var drained: [UInt32] = []
    for (isActive, list) in [(true, activeList), (false, drainedList)] {
      for (j, text) in list.texts.enumerated() {
        let field = "\(path).\(list.name)[\(j)]"
        let address = try parseAddress(text, field: field)
        if let owner = natIpOwner[address] {
          throw fail(field, owner == me ? "\(text) is listed more than once" : "\(text) \(Self.ownerText(owner, me: me))")
        }
        if let region = result.autoPoolRegion[address] {
          throw fail(field, "\(text) belongs to the auto-allocation pool of region '\(region)'")
        }
        natIpOwner[address] = me
        if isActive { active.append(address) } else { drained.append(address) }
      }
    }
    return (active, drained)
  }

  /// Where an address already is, for an error naming it.
  private static func ownerText(_ owner: NATIPOwner, me: NATIPOwner) -> String {
    switch (owner.gateway == me.gateway, owner.rule) {
    case (true, nil): "is already a default NAT IP of this gateway (natIps or drainNatIps)"
    case (true, let rule?): "is already a NAT IP of rule \(rule) of this gateway"
    case (false, nil): "is already a NAT IP of gateway '\(owner.gateway)'"
    case (false, let rule?): "is already a NAT IP of rule \(rule) of gateway '\(owner.gateway)'"
    }
  }
}
