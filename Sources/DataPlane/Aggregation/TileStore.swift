import Shared

/// The tiles of many entities, packed: each tile is a run of 8-byte words in
/// one arena, holding for each aggregated input only the parts of its partial
/// aggregate that the view's functions read (a `mean` needs a count and a
/// sum, a `last` the latest value and its times, and so on). A dictionary
/// finds an entity's tile while events are added; each entity keeps the list
/// of its tiles for reading them back.
///
/// A tile of the driver-stats windows (a mean of one column, a sum of
/// another) takes 5 words, where a dictionary of arrays of whole
/// `PartialAggregate`s took some 400 bytes.
struct TileStore {
    /// Which parts of a `PartialAggregate` one input keeps.
    struct Layout: Equatable {
        var sum = false, integerSum = false, moments = false, minimum = false, maximum = false, latest = false

        /// The parts the functions reading an input need.
        init(functions: some Sequence<AggregationFunction>) {
            for function in functions {
                switch function {
                case .count: break
                case .sum: sum = true; integerSum = true
                case .mean, .stddev: moments = true
                case .min: minimum = true
                case .max: maximum = true
                case .last: latest = true
                }
            }
        }

        /// Words per tile: the count, then the parts kept.
        var width: Int {
            1 + (sum ? 1 : 0) + (integerSum ? 2 : 0) + (moments ? 2 : 0) + (minimum ? 1 : 0) + (maximum ? 1 : 0) + (latest ? 3 : 0)
        }
    }

    let layouts: [Layout]
    /// Words per tile, all inputs together.
    let width: Int
    private var entitySlots: [EntityKey: Int32] = [:]
    /// The entities, by slot.
    private(set) var keys: [EntityKey] = []
    /// Each entity's tiles, as (tile index, offset of its words in `words`).
    private var entityTiles: [[(tile: Int64, offset: Int)]] = []
    /// An entity's tile, by slot and tile index, to its offset in `words`.
    private var offsets: [TileAddress: Int] = [:]
    private var words: [UInt64] = []

    struct TileAddress: Hashable {
        var entity: Int32
        var tile: Int64
    }

    /// A store for inputs of `layouts`, with room for `reservingTiles` tiles.
    init(layouts: [Layout], reservingTiles: Int = 0) {
        self.layouts = layouts
        width = layouts.reduce(0) { $0 + $1.width }
        if reservingTiles > 0 {
            words.reserveCapacity(reservingTiles * width)
            offsets.reserveCapacity(reservingTiles)
        }
    }

    /// How many tiles are held.
    var tileCount: Int { words.count / max(1, width) }

    /// Adds one event's inputs to its entity's tile.
    mutating func add(key: EntityKey, tile: Int64, inputs: [Double?], time: Int64, created: Int64) {
        let slot: Int32
        if let known = entitySlots[key] {
            slot = known
        } else {
            slot = Int32(keys.count)
            entitySlots[key] = slot
            keys.append(key)
            entityTiles.append([])
        }
        let address = TileAddress(entity: slot, tile: tile)
        let offset: Int
        if let known = offsets[address] {
            offset = known
        } else {
            offset = words.count
            words.append(contentsOf: repeatElement(0, count: width))
            offsets[address] = offset
            entityTiles[Int(slot)].append((tile, offset))
        }
        var position = offset
        for (input, layout) in layouts.enumerated() {
            var aggregate = Self.decode(words, at: position, layout)
            aggregate.add(inputs[input], time: time, created: created)
            Self.encode(aggregate, into: &words, at: position, layout)
            position += layout.width
        }
    }

    /// The tiles of the entity in `slot`, by tile index, one aggregate per input.
    func tiles(ofEntity slot: Int) -> [Int64: [PartialAggregate]] {
        var tiles: [Int64: [PartialAggregate]] = [:]
        tiles.reserveCapacity(entityTiles[slot].count)
        for (tile, offset) in entityTiles[slot] {
            var position = offset
            tiles[tile] = layouts.map { layout in
                defer { position += layout.width }
                return Self.decode(words, at: position, layout)
            }
        }
        return tiles
    }

    static func decode(_ words: [UInt64], at offset: Int, _ layout: Layout) -> PartialAggregate {
        var position = offset
        func next() -> UInt64 { defer { position += 1 }; return words[position] }
        let count = Int64(bitPattern: next())
        guard count > 0 else {
            // An empty tile: skip its words.
            return PartialAggregate()
        }
        let sum = layout.sum ? Double(bitPattern: next()) : 0
        var integerSum: Int64?
        if layout.integerSum {
            let value = Int64(bitPattern: next())
            integerSum = next() == 0 ? value : nil
        }
        let mean = layout.moments ? Double(bitPattern: next()) : 0
        let squaredDeviations = layout.moments ? Double(bitPattern: next()) : 0
        // Parts not kept are never read; they get harmless values so that merging works.
        let minimum = layout.minimum ? Double(bitPattern: next()) : 0
        let maximum = layout.maximum ? Double(bitPattern: next()) : 0
        var latest = LatestValue(time: 0, created: 0, value: 0)
        if layout.latest {
            latest = LatestValue(time: Int64(bitPattern: next()), created: Int64(bitPattern: next()), value: Double(bitPattern: next()))
        }
        return PartialAggregate(
            count: count, sum: sum, integerSum: integerSum, mean: mean, squaredDeviations: squaredDeviations,
            minimum: minimum, maximum: maximum, latest: latest)
    }

    static func encode(_ aggregate: PartialAggregate, into words: inout [UInt64], at offset: Int, _ layout: Layout) {
        var position = offset
        func put(_ word: UInt64) {
            words[position] = word
            position += 1
        }
        put(UInt64(bitPattern: aggregate.count))
        if layout.sum { put(aggregate.sum.bitPattern) }
        if layout.integerSum {
            put(UInt64(bitPattern: aggregate.integerSum ?? 0))
            put(aggregate.integerSum == nil ? 1 : 0)
        }
        if layout.moments {
            put(aggregate.mean.bitPattern)
            put(aggregate.squaredDeviations.bitPattern)
        }
        if layout.minimum { put((aggregate.minimum ?? 0).bitPattern) }
        if layout.maximum { put((aggregate.maximum ?? 0).bitPattern) }
        if layout.latest {
            let latest = aggregate.latest ?? LatestValue(time: 0, created: 0, value: 0)
            put(UInt64(bitPattern: latest.time))
            put(UInt64(bitPattern: latest.created))
            put(latest.value.bitPattern)
        }
    }
}
