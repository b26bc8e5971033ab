import Shared

/// One output feature of a time-window aggregation: a function of one input
/// column over a window that is a whole number of tiles.
public struct WindowedFeature: Sendable, Hashable {
    /// The function.
    public var function: AggregationFunction
    /// Which input column of the events it reads.
    public var input: Int
    /// The window, in seconds (a multiple of the tile length).
    public var window: Int64

    /// Creates a feature.
    public init(function: AggregationFunction, input: Int, window: Int64) {
        self.function = function
        self.input = input
        self.window = window
    }
}

/// An event of one entity: its times and the values of the input columns.
public struct AggregationEvent: Sendable, Hashable {
    /// Event time, seconds since the epoch.
    public var time: Int64
    /// Created (ingestion) time, seconds since the epoch.
    public var created: Int64
    /// One value per input column; nil is null.
    public var inputs: [Double?]

    /// Creates an event.
    public init(time: Int64, created: Int64, inputs: [Double?]) {
        self.time = time
        self.created = created
        self.inputs = inputs
    }
}

/// The features of one entity at one tile boundary.
public struct AggregatedRow: Sendable, Hashable {
    /// The boundary (seconds since the epoch): every window ends here, exclusive.
    public var boundary: Int64
    /// One value per feature, in the order the features were given.
    public var values: [Double?]
}

/// Time-window aggregations over partial-aggregate tiles.
///
/// **Semantics.** Time is cut into epoch-aligned tiles of `tile` seconds (the
/// view's slide). At each tile boundary `b`, a feature with window `w` is its
/// function over the events with `b - w <= time < b`. The value of a feature at
/// any instant `t` is its value at the last boundary at or before `t` — online
/// serving and training sets both read it that way, so they agree by
/// construction.
///
/// **Tiles.** Each event is added to the partial aggregate of its tile (per
/// input column); a window's value is the merge of its tiles, kept up to date
/// in a `SlidingWindow` as the boundary moves one tile at a time. Events may
/// arrive in any order, and late events just join their tile.
///
/// **Rows.** Only the boundaries where some feature's value can change are
/// emitted: a tile entering or leaving some window held events. Reading "the
/// last row at or before `t`" therefore gives exactly the value at `t`.
public struct WindowAggregator: Sendable {
    /// The tile length in seconds.
    public let tile: Int64
    /// The features, in output order.
    public let features: [WindowedFeature]

    /// Why a set of features cannot be aggregated.
    public struct Invalid: Error, Sendable, CustomStringConvertible {
        /// What is wrong.
        public let description: String
    }

    /// Creates an aggregator; each window must be a positive multiple of `tile`.
    public init(tile: Int64, features: [WindowedFeature]) throws(Invalid) {
        guard tile > 0 else { throw Invalid(description: "the tile length must be positive") }
        for feature in features where feature.window <= 0 || feature.window % tile != 0 {
            throw Invalid(description: "window \(feature.window) s is not a positive multiple of the tile, \(tile) s")
        }
        self.tile = tile
        self.features = features
    }

    /// The tile holding instant `time`.
    public func tileIndex(of time: Int64) -> Int64 {
        time.dividedRoundingDown(by: tile)
    }

    /// Adds `events` to per-tile partial aggregates (one per input column).
    public func tiles(of events: some Sequence<AggregationEvent>, inputs: Int) -> [Int64: [PartialAggregate]] {
        var tiles: [Int64: [PartialAggregate]] = [:]
        for event in events {
            let index = tileIndex(of: event.time)
            var aggregates = tiles[index] ?? Array(repeating: PartialAggregate(), count: inputs)
            for column in 0..<min(inputs, event.inputs.count) {
                aggregates[column].add(event.inputs[column], time: event.time, created: event.created)
            }
            tiles[index] = aggregates
        }
        return tiles
    }

    /// The rows of the boundaries in `[from, to]` (seconds, rounded down to
    /// boundaries) where a value can change, from tiles built by `tiles(of:)`.
    /// The tiles must cover at least `[from - longest window, to)`.
    public func rows(tiles: [Int64: [PartialAggregate]], from: Int64, to: Int64) -> [AggregatedRow] {
        let first = tileIndex(of: from), last = tileIndex(of: to)
        guard first <= last, !features.isEmpty else { return [] }
        let spans = features.map { Int($0.window / tile) }
        // One sliding window per feature, primed with the tiles before the first boundary.
        var windows = features.map { _ in SlidingWindow() }
        for (position, feature) in features.enumerated() {
            for index in (first - Int64(spans[position]))..<first {
                windows[position].push(tiles[index]?[feature.input] ?? PartialAggregate())
            }
        }
        var rows: [AggregatedRow] = []
        var previous: [Double?]?
        for boundary in first...last {
            // Does a tile with events enter (the one just before the boundary) or leave a window?
            var changes = previous == nil
            for (position, feature) in features.enumerated() {
                if boundary > first {
                    let entering = tiles[boundary - 1]?[feature.input] ?? PartialAggregate()
                    windows[position].push(entering)
                    windows[position].popOldest()
                    let leaving = tiles[boundary - 1 - Int64(spans[position])]?[feature.input]
                    if !entering.isEmpty || !(leaving?.isEmpty ?? true) { changes = true }
                }
            }
            guard changes else { continue }
            let values = features.enumerated().map { position, feature in windows[position].total.value(of: feature.function) }
            if values != previous || boundary == first {
                rows.append(AggregatedRow(boundary: boundary * tile, values: values))
            }
            previous = values
        }
        return rows
    }
}

extension Int64 {
    /// The quotient rounded towards minus infinity (`/` rounds towards zero):
    /// the tile, second or day holding an instant before 1970 too.
    @inline(__always)
    func dividedRoundingDown(by divisor: Int64) -> Int64 {
        self >= 0 ? self / divisor : -((-self + divisor - 1) / divisor)
    }
}
