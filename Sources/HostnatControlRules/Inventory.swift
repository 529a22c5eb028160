public import HostnatProto
import SwiftProtobuf

/// A NAT IP:port block as both ends name it (control.proto's PortBlock, NatRoute, HeldBlock).
public struct BlockKey: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
  public var natIP: String
  public var firstPort: UInt32
  public var count: UInt32

  public init(natIP: String, firstPort: UInt32, count: UInt32) {
    self.natIP = natIP
    self.firstPort = firstPort
    self.count = count
  }

  public var description: String { "\(natIP):\(firstPort)+\(count)" }

  public static func < (a: BlockKey, b: BlockKey) -> Bool {
    (a.natIP, a.firstPort, a.count) < (b.natIP, b.firstPort, b.count)
  }

  /// Whether the two share a port.
  public func overlaps(_ other: BlockKey) -> Bool {
    natIP == other.natIP && UInt64(firstPort) < UInt64(other.firstPort) + UInt64(other.count)
      && UInt64(other.firstPort) < UInt64(firstPort) + UInt64(count)
  }
}

/// What a Hello says a node holds (control.proto rule 9).
public enum Inventory {
  /// A host's blocks, from the snapshot it applied; `fenced`: its lease ran out (lease mode).
  public static func blocks(of config: Hostnat_V1_HostConfig, fenced: Bool) -> [Hostnat_V1_HeldBlock] {
    var held: [Hostnat_V1_HeldBlock] = []
    for vm in config.vms {
      for nic in vm.nics {
        for binding in nic.natBindings {
          for block in binding.portBlocks {
            held.append(.with {
              $0.natIp = block.natIp
              $0.firstPort = block.firstPort
              $0.count = block.count
              $0.state = fenced ? .blockFenced : block.drained ? .blockDrained : .blockActive
              $0.instance = vm.instance
              $0.nic = nic.name
            })
          }
        }
      }
    }
    return held
  }

  /// The edge's view: every routed block and the host it goes to.
  public static func blocks(of config: Hostnat_V1_EdgeConfig) -> [Hostnat_V1_HeldBlock] {
    config.natRoutes.map { route in
      .with {
        $0.natIp = route.natIp
        $0.firstPort = route.firstPort
        $0.count = route.count
        $0.state = .blockActive
        $0.hostID = route.hostID
      }
    }
  }
}

extension Hostnat_V1_HeldBlock {
  public var key: BlockKey { BlockKey(natIP: natIp, firstPort: firstPort, count: count) }
}

extension Hostnat_V1_PortBlock {
  public var key: BlockKey { BlockKey(natIP: natIp, firstPort: firstPort, count: count) }
}
