import Shared

/// How a feature view's declarative aggregations map onto a
/// `WindowAggregator`: the distinct source columns aggregated, one windowed
/// feature per (aggregation, window), and the output column of each. One
/// definition for materialization and pushes, so both write the same columns.
struct AggregationLayout: Sendable {
    /// The source columns aggregated, in `WindowedFeature.input` order.
    let inputs: [String]
    /// One per (aggregation, window), in output order.
    let features: [WindowedFeature]
    /// The output column of each feature.
    let outputs: [Column]

    /// The layout of `aggregations` over a source whose columns have `types`.
    init(_ aggregations: [AggregationDefinition], sourceTypes types: [String: ValueType]) {
        var inputs: [String] = [], features: [WindowedFeature] = [], outputs: [Column] = []
        for aggregation in aggregations {
            if !inputs.contains(aggregation.column) { inputs.append(aggregation.column) }
            let input = inputs.firstIndex(of: aggregation.column)!
            for window in aggregation.windows {
                features.append(WindowedFeature(function: aggregation.function, input: input, window: window.seconds))
                outputs.append(Column(
                    name: aggregation.featureName(window: window),
                    type: aggregation.function.outputType(for: types[aggregation.column] ?? .float64) ?? .float64))
            }
        }
        self.inputs = inputs
        self.features = features
        self.outputs = outputs
    }

    /// Window values (one row per entry of `rows`, one value per feature) as
    /// the store columns of the output types.
    func columns(_ rows: [[Double?]]) -> [ColumnValues] {
        outputs.enumerated().map { feature, column -> ColumnValues in
            let values = rows.map { $0[feature] }
            switch column.type {
            case .int64, .int32: return .int64(values.map { $0.map { Int64($0.rounded()) } })
            case .timestamp: return .timestamp(values.map { $0.map { Int64($0.rounded()) } })
            case .bool: return .bool(values.map { $0.map { $0 != 0 } })
            default: return .float64(values)
            }
        }
    }
}
