// The generated files next to this one come from proto/hostnat/v1 via scripts/generate-proto.sh;
// never edit them by hand.

/// Facts about the wire protocol that are not in the generated code.
public enum HostnatProtocol {
  /// The protobuf package every message and service lives in.
  public static let package = "hostnat.v1"
  /// Default UDP port of the Geneve data-plane underlay (RFC 8926).
  public static let genevePort: UInt16 = 6081
}
