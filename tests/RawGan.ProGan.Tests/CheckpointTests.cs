using System.Text;
using RawGan.ProGan.Checkpoints;
using RawGan.ProGan.IO;

namespace RawGan.ProGan.Tests;

public class SafeTensorsTests
{
    [Fact]
    public void ATinyFileHasExactlyTheBytesOfTheFormat()
    {
        var bytes = SafeTensors.Serialize(
            [new NamedTensor("b", [2], [1f, 2f]), new NamedTensor("a", [1, 1], [-0.5f])],
            new Dictionary<string, string> { ["format"] = "pt" });

        // Written by hand: metadata first, tensors in name order packed from offset 0, the 141-byte JSON
        // padded with 3 spaces to 144 so that 8 + 144 is a multiple of 8, then little-endian floats.
        const string json = "{\"__metadata__\":{\"format\":\"pt\"}," +
                            "\"a\":{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[0,4]}," +
                            "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}";
        Assert.Equal(141, json.Length);
        var expected = new List<byte> { 144, 0, 0, 0, 0, 0, 0, 0 };
        expected.AddRange(Encoding.ASCII.GetBytes(json + "   "));
        expected.AddRange([0x00, 0x00, 0x00, 0xBF]); // -0.5f = 0xBF000000
        expected.AddRange([0x00, 0x00, 0x80, 0x3F]); //  1.0f = 0x3F800000
        expected.AddRange([0x00, 0x00, 0x00, 0x40]); //  2.0f = 0x40000000
        Assert.Equal(expected.ToArray(), bytes);
    }

    [Fact]
    public void SaveAndLoadRoundTripEveryShape()
    {
        using var directory = new TempDirectory();
        var random = new Random(1);
        float[] Random(int n) => Enumerable.Range(0, n).Select(_ => (float)random.NextDouble() * 2 - 1).ToArray();
        var tensors = new[]
        {
            new NamedTensor("G.block1.conv.weight", [4, 3, 3, 3], Random(108)),
            new NamedTensor("G.block1.conv.bias", [4], Random(4)),
            new NamedTensor("scalar", [], [42f]),
            new NamedTensor("empty", [0, 5], []),
            new NamedTensor("ünïcode \"quoted\"\n", [2], [float.NegativeInfinity, float.NaN]),
        };
        var metadata = new Dictionary<string, string> { ["kimg"] = "123.4", ["config"] = "{\"res\": 32}" };
        string path = directory.File("g.safetensors");
        SafeTensors.Save(path, tensors, metadata);

        var loaded = SafeTensors.Load(path);
        Assert.Equal(metadata, loaded.Metadata);
        Assert.Equal(tensors.Length, loaded.Tensors.Count);
        foreach (var tensor in tensors)
        {
            var back = loaded.Tensors[tensor.Name];
            Assert.Equal(tensor.Shape, back.Shape);
            Assert.Equal(tensor.Data, back.Data);
        }
        var (infos, _) = SafeTensors.ReadHeader(path);
        Assert.Equal(tensors.Select(t => t.Name).Order(StringComparer.Ordinal), infos.Select(i => i.Name));
        Assert.Equal(0, (8 + BitConverter.ToInt64(File.ReadAllBytes(path), 0)) % 8);
    }

    /// <summary>A safetensors file around a hand-written header (padded to 8) and data bytes.</summary>
    private static byte[] FileWith(string header, byte[] data)
    {
        var headerBytes = Encoding.UTF8.GetBytes(header);
        var file = new List<byte>(BitConverter.GetBytes((ulong)headerBytes.Length));
        file.AddRange(headerBytes);
        file.AddRange(data);
        return file.ToArray();
    }

    private static string Problem(byte[] file)
    {
        using var directory = new TempDirectory();
        string path = directory.File("bad.safetensors");
        File.WriteAllBytes(path, file);
        var error = Assert.Throws<InvalidFileException>(() => SafeTensors.Load(path));
        Assert.Equal(path, error.FilePath);
        return error.Problem;
    }

    [Fact]
    public void OtherFloatDtypesAreConverted()
    {
        // F16 1.5 = 0x3E00, BF16 -2 = 0xC000, F64 0.25 = 0x3FD0000000000000.
        var file = FileWith(
            "{\"h\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,2]}," +
            "\"b\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[2,4]}," +
            "\"d\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[8,16]}}",
            [0x00, 0x3E, 0x00, 0xC0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xD0, 0x3F]);
        using var directory = new TempDirectory();
        string path = directory.File("mixed.safetensors");
        File.WriteAllBytes(path, file);
        var loaded = SafeTensors.Load(path).Tensors;
        Assert.Equal([1.5f], loaded["h"].Data);
        Assert.Equal([-2f], loaded["b"].Data);
        Assert.Equal([0.25f], loaded["d"].Data);
    }

    [Fact]
    public void MalformedFilesAreRejectedWithTheProblemNamed()
    {
        const string good = "\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
        var eight = new byte[8];
        Assert.Contains("too short", Problem([1, 2, 3]));
        Assert.Contains("only 0 bytes follow", Problem(BitConverter.GetBytes(100UL)));
        Assert.Contains("only", Problem(BitConverter.GetBytes(ulong.MaxValue).Concat(new byte[16]).ToArray()));
        Assert.Contains("not valid JSON", Problem(FileWith("{\"t\": [1, 2", eight)));
        Assert.Contains("not an object", Problem(FileWith("[1, 2, 3]", eight)));
        Assert.Contains("reach past", Problem(FileWith("{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", eight)));
        Assert.Contains("needs 12 bytes", Problem(FileWith("{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", eight)));
        Assert.Contains("overlap", Problem(FileWith("{" + good + ",\"u\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", eight)));
        Assert.Contains("dtype I64", Problem(FileWith("{\"t\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", eight)));
        Assert.Contains("end before they begin", Problem(FileWith("{\"t\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", eight)));
        Assert.Contains("shape entry 0", Problem(FileWith("{\"t\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", eight)));
        Assert.Contains("no \"dtype\"", Problem(FileWith("{\"t\":{\"shape\":[2],\"data_offsets\":[0,8]}}", eight)));
        Assert.Contains("data_offsets", Problem(FileWith("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", eight)));
        Assert.Contains("more elements", Problem(FileWith("{\"t\":{\"dtype\":\"F32\",\"shape\":[2147483647,2147483647],\"data_offsets\":[0,8]}}", eight)));
        Assert.Contains("not a string", Problem(FileWith("{\"__metadata__\":{\"a\":1}," + good + "}", eight)));
        // A duplicate name: whichever part of the reader notices, the file is refused.
        Problem(FileWith("{" + good + "," + good + "}", eight));
    }

    [Fact]
    public void RandomMutationsNeverEscapeAsOtherExceptions()
    {
        using var directory = new TempDirectory();
        var original = SafeTensors.Serialize(
            [new NamedTensor("w", [3, 2], [1, 2, 3, 4, 5, 6]), new NamedTensor("b", [3], [7, 8, 9])],
            new Dictionary<string, string> { ["step"] = "10" });
        string path = directory.File("fuzz.safetensors");
        var random = new Random(7);
        for (int trial = 0; trial < 2000; trial++)
        {
            var file = (byte[])original.Clone();
            switch (random.Next(3))
            {
                case 0: file[random.Next(file.Length)] ^= (byte)(1 << random.Next(8)); break;
                case 1: file[random.Next(file.Length)] = (byte)random.Next(32, 127); break;
                default: file = file[..random.Next(file.Length)]; break;
            }
            File.WriteAllBytes(path, file);
            try { SafeTensors.Load(path); }
            catch (InvalidFileException) { }
        }
    }

    [Fact]
    public void DuplicateAndReservedNamesAreRefusedWhenWriting()
    {
        Assert.Throws<ArgumentException>(() => SafeTensors.Serialize([new NamedTensor("x", [1], [1]), new NamedTensor("x", [1], [2])]));
        Assert.Throws<ArgumentException>(() => SafeTensors.Serialize([new NamedTensor("__metadata__", [1], [1])]));
        Assert.Throws<ArgumentException>(() => new NamedTensor("x", [2, 2], [1, 2, 3]));
    }
}

public class NpyTests
{
    [Fact]
    public void AKnownArrayHasExactlyTheBytesOfTheFormat()
    {
        var bytes = Npy.Serialize(new float[] { 0, 1, 2, 3, 4, -1 }, [2, 3]);
        // Magic, version 1.0, header length 118 (little-endian), the dict, 58 spaces and a newline so
        // that 10 + 118 = 128 is a multiple of 64, then six little-endian floats.
        var expected = new List<byte> { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0, 118, 0 };
        expected.AddRange(Encoding.ASCII.GetBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" + new string(' ', 58) + "\n"));
        foreach (uint bits in new uint[] { 0, 0x3F800000, 0x40000000, 0x40400000, 0x40800000, 0xBF800000 })
            expected.AddRange([(byte)bits, (byte)(bits >> 8), (byte)(bits >> 16), (byte)(bits >> 24)]);
        Assert.Equal(expected.ToArray(), bytes);
    }

    [Fact]
    public void ShapesOfEveryRankRoundTrip()
    {
        using var directory = new TempDirectory();
        foreach (var shape in new[] { new int[0], [5], [2, 3, 4], [1, 512], [0, 3] })
        {
            int count = shape.Aggregate(1, (a, b) => a * b);
            var data = Enumerable.Range(0, count).Select(i => i * 0.5f - 3).ToArray();
            string path = directory.File("a.npy");
            Npy.Save(path, data, shape);
            var bytes = File.ReadAllBytes(path);
            Assert.Equal(0, (10 + BitConverter.ToUInt16(bytes, 8)) % 64);
            var loaded = Npy.Load(path);
            Assert.Equal(shape, loaded.Shape);
            Assert.Equal(data, loaded.Data);
        }
        Assert.Contains("'shape': (5,)", Encoding.ASCII.GetString(Npy.Serialize(new float[5], [5])));
        Assert.Contains("'shape': ()", Encoding.ASCII.GetString(Npy.Serialize(new float[1], [])));
    }

    /// <summary>A .npy file around a hand-written header (version 1.0 unless given) and data.</summary>
    private static byte[] FileWith(string header, byte[] data, byte major = 1)
    {
        var file = new List<byte> { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', major, 0 };
        if (major == 1)
            file.AddRange(BitConverter.GetBytes((ushort)header.Length));
        else
            file.AddRange(BitConverter.GetBytes((uint)header.Length));
        file.AddRange(Encoding.ASCII.GetBytes(header));
        file.AddRange(data);
        return file.ToArray();
    }

    [Fact]
    public void Float64AndVersion2FilesAreRead()
    {
        var doubles = new List<byte>();
        foreach (double v in new[] { 0.5, -3.0, 1e-3 })
            doubles.AddRange(BitConverter.GetBytes(v));
        var array = Npy.Parse(FileWith("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }\n", doubles.ToArray()), "d.npy");
        Assert.Equal([3], array.Shape);
        Assert.Equal([0.5f, -3f, 1e-3f], array.Data);

        // Key order and quoting vary between writers; version 2.0 has a 32-bit header length.
        var v2 = Npy.Parse(FileWith("{\"shape\": (1, 1), \"fortran_order\": False, \"descr\": \"<f4\"}\n", BitConverter.GetBytes(7f), major: 2), "v2.npy");
        Assert.Equal([1, 1], v2.Shape);
        Assert.Equal([7f], v2.Data);
    }

    [Fact]
    public void RandomMutationsNeverEscapeAsOtherExceptions()
    {
        var original = Npy.Serialize(Enumerable.Range(0, 12).Select(i => (float)i).ToArray(), [3, 4]);
        var random = new Random(11);
        for (int trial = 0; trial < 2000; trial++)
        {
            var file = (byte[])original.Clone();
            switch (random.Next(3))
            {
                case 0: file[random.Next(file.Length)] ^= (byte)(1 << random.Next(8)); break;
                case 1: file[random.Next(70)] = (byte)random.Next(32, 127); break; // inside the header text
                default: file = file[..random.Next(file.Length)]; break;
            }
            try { Npy.Parse(file, "fuzz.npy"); }
            catch (InvalidFileException) { }
        }
    }

    [Fact]
    public void UnsupportedAndMalformedFilesAreRejected()
    {
        string Problem(byte[] file) => Assert.Throws<InvalidFileException>(() => Npy.Parse(file, "x.npy")).Problem;
        var four = new byte[4];
        Assert.Contains("not a .npy", Problem([1, 2, 3]));
        Assert.Contains("big-endian", Problem(FileWith("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", four)));
        Assert.Contains("Fortran order", Problem(FileWith("{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }", four)));
        Assert.Contains("'<i8'", Problem(FileWith("{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }", new byte[8])));
        Assert.Contains("needs 8 bytes", Problem(FileWith("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", four)));
        Assert.Contains("needs the keys", Problem(FileWith("{'descr': '<f4', 'shape': (1,), }", four)));
        Assert.Contains("unexpected or repeated key", Problem(FileWith("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", four)));
        Assert.Contains("expected a dimension", Problem(FileWith("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", four)));
        Assert.Contains("version 9.0", Problem(FileWith("{}", four, major: 9)));
        Assert.Contains("truncated", Problem(FileWith("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", four)[..20]));
        Assert.Contains("needs", Problem(FileWith("{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000, 100000), }", four)));
    }
}
