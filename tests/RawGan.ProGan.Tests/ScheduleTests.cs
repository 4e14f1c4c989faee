using RawGan.ProGan.Model;
using RawGan.ProGan.Training;

namespace RawGan.ProGan.Tests;

public class ScheduleTests
{
    [Fact]
    public void Images_per_phase_per_resolution_apply_to_the_fade_in_and_the_stable_phase_alike()
    {
        var options = new TrainOptions
        {
            Model = ProGanConfig.Tiny(32),
            ImagesPerPhase = 6000,
            ImagesPerPhaseByResolution = new() { [4] = 20_000, [16] = 9000 },
        }.Validate();
        var schedule = new Schedule(options.Model.MaxLevel, options.ImagesFor);

        Assert.Equal(["stable 4x4", "fade-in 8x8", "stable 8x8", "fade-in 16x16", "stable 16x16", "fade-in 32x32", "stable 32x32"],
            schedule.Phases.Select(p => p.Describe()));
        Assert.Equal([20_000L, 6000, 6000, 9000, 9000, 6000, 6000], schedule.Phases.Select(p => p.Images));
        Assert.Equal(62_000, schedule.TotalImages);
        Assert.Equal("7 phases: 4x4 20,000, 8x8 6,000, 16x16 9,000, 32x32 6,000 images each", schedule.Describe());
        Assert.Equal("7 phases of 6,000 images", new Schedule(5, 6000).Describe());
    }

    [Fact]
    public void A_fade_share_splits_each_resolutions_two_periods_and_keeps_their_sum()
    {
        var options = new TrainOptions { Model = ProGanConfig.Tiny(32), ImagesPerPhase = 6000, ImagesPerPhaseByResolution = new() { [4] = 15_000, [8] = 10_000 }, FadeShare = 0.25 }.Validate();
        var schedule = new Schedule(options.Model.MaxLevel, options.ImagesFor, options.FadeShare);
        Assert.Equal([15_000L, 5000, 15_000, 3000, 9000, 3000, 9000], schedule.Phases.Select(p => p.Images));
        Assert.Equal([false, true, false, true, false, true, false], schedule.Phases.Select(p => p.FadeIn));
        Assert.Equal(new Schedule(options.Model.MaxLevel, options.ImagesFor).TotalImages, schedule.TotalImages);
        Assert.Equal("7 phases: 4x4 15,000, 8x8 5,000 + 15,000, 16x16 3,000 + 9,000, 32x32 3,000 + 9,000 images (fade-in + stable)", schedule.Describe());
        // The alpha of a short fade-in reaches 1 at its own end.
        Assert.Equal(0.5f, Schedule.Alpha(schedule.Phases[1], 2500));
        // Rounding never leaves a period empty: one image per period is the least.
        Assert.Equal([1L, 1, 1], new Schedule(3, _ => 1, 0.1).Phases.Select(p => p.Images));
        Assert.Throws<ArgumentException>(() => new Schedule(3, _ => 10, 1.0));
    }

    [Fact]
    public void A_resolution_with_no_images_is_refused_with_its_name()
    {
        var options = new TrainOptions { Model = ProGanConfig.Tiny(16), ImagesPerPhaseByResolution = new() { [8] = 0 } };
        var e = Assert.Throws<ArgumentException>(() => options.Validate());
        Assert.Contains("8x8", e.Message);
    }

    [Fact]
    public void Multiply_adds_per_image_follow_the_layers_by_hand()
    {
        // Latent 4, 8 channels everywhere (fmap-base 32, fmap-max 8), RGB: at 4x4 G has the dense layer (8*16*4), the 3x3
        // convolution at 16 pixels (8*8*9*16) and toRGB (3*8*16); D fromRGB (8*3*16), its head
        // convolution over 9 channels (8*9*9*16), the dense layers (8*8*16, 8).
        var model = new ProGanConfig { Resolution = 8, LatentSize = 4, FmapBase = 32, FmapMax = 8 };
        long at4 = 8 * 16 * 4 + 8 * 8 * 9 * 16 + 3 * 8 * 16 + 8 * 3 * 16 + 8 * 9 * 9 * 16 + 8 * 8 * 16 + 8;
        Assert.Equal(at4, model.MultiplyAddsPerImage(2));
        // 8x8 adds G's block (two 8->8 convolutions at 64 pixels) and toRGB at 64, D's block the
        // same and fromRGB at 64; the 4x4 RGB layers are not used.
        long at8 = at4 - 3 * 8 * 16 - 8 * 3 * 16 + 4 * (8 * 8 * 9 * 64) + 3 * 8 * 64 + 8 * 3 * 64;
        Assert.Equal(at8, model.MultiplyAddsPerImage(3));
    }

    [Fact]
    public void The_remaining_time_uses_measured_costs_and_extrapolates_the_rest_by_the_fitted_exponent()
    {
        var model = ProGanConfig.Tiny(32);
        var schedule = new Schedule(model.MaxLevel, 1000);
        var eta = new RemainingTime(model);
        Assert.Equal(0, eta.Seconds(schedule, schedule.Phases[0], 0));

        // With 4x4 alone measured (1 ms an image), 8x8 costs (work ratio)^0.66 of that.
        eta.Record(2, 1000, 1.0);
        double ratio8 = (double)model.MultiplyAddsPerImage(3) / model.MultiplyAddsPerImage(2);
        Assert.Equal(1e-3 * Math.Pow(ratio8, RemainingTime.PriorExponent), eta.SecondsPerImage(3), 9);

        // Measured at 8x8 as 4 ms: a fixed cost per image plus a cost per multiply-add through
        // the two points, carried to 16 and 32.
        eta.Record(3, 500, 2.0);
        double w4 = model.MultiplyAddsPerImage(2), w8 = model.MultiplyAddsPerImage(3);
        double perWork = (4e-3 - 1e-3) / (w8 - w4), fixedCost = 1e-3 - perWork * w4;
        double Predicted(int level) => fixedCost + perWork * model.MultiplyAddsPerImage(level);
        Assert.Equal(4e-3, eta.SecondsPerImage(3), 12);
        Assert.Equal(Predicted(4), eta.SecondsPerImage(4), 9);
        Assert.Equal(Predicted(5), eta.SecondsPerImage(5), 9);

        // In the stable 8x8 phase with 250 images shown: 750 more at 8x8, then 2000 each at 16 and 32.
        double expected = 750 * 4e-3 + 2000 * Predicted(4) + 2000 * Predicted(5);
        Assert.Equal(expected, eta.Seconds(schedule, schedule.Phases[2], 250), 6);
    }

    [Fact]
    public void The_default_runs_costs_are_estimated_within_half_from_its_first_resolution_on()
    {
        // The tiny preset's costs on two CPU cores, seconds per image: 4x4 1/1500, 8x8 1/500,
        // 16x16 1/200, 32x32 1/90. Assuming 4x per doubling, the estimate after 4x4 was 3.7 times
        // what the run then cost.
        var model = ProGanConfig.Tiny(32);
        var schedule = new Schedule(model.MaxLevel, 6000);
        double[] cost = [1 / 1500.0, 1 / 500.0, 1 / 200.0, 1 / 90.0];
        var eta = new RemainingTime(model);
        for (int level = 2; level <= 4; level++)
        {
            eta.Record(level, level == 2 ? 6000 : 12000, (level == 2 ? 6000 : 12000) * cost[level - 2]);
            var next = schedule.Phases.First(p => p.Level == level + 1);
            double actual = Enumerable.Range(level + 1, 5 - level).Sum(l => 12000 * cost[l - 2]);
            Assert.InRange(eta.Seconds(schedule, next, 0) / actual, 0.67, 1.5);
        }
    }
    [Fact]
    public void A_phases_first_tick_counts_as_a_cost_per_phase_not_per_image()
    {
        // Steady costs of the default run on two cores (seconds per image; 4x4 2,200 images/s, 8x8
        // 800, 16x16 220, 32x32 110) and 3 s more in each phase's first tick (the previous phase's
        // SWD and checkpoint, the new shapes' first steps). Ticks of 2,000 images.
        var model = ProGanConfig.Tiny(32);
        var schedule = new Schedule(model.MaxLevel, 6000);
        double[] cost = [1 / 2200.0, 1 / 800.0, 1 / 220.0, 1 / 110.0];
        const double start = 3, tick = 2000;
        var ticks = schedule.Phases.SelectMany(p => Enumerable.Range(0, (int)(p.Images / tick))
            .Select(t => (Phase: p, First: t == 0, Seconds: tick * cost[p.Level - 2] + (t == 0 ? start : 0)))).ToList();
        var eta = new RemainingTime(model);
        for (int t = 0; t < ticks.Count; t++)
        {
            var (phase, first, seconds) = ticks[t];
            eta.Record(phase.Level, (long)tick, seconds, startsPhase: first);
            if (t == 0)
            {
                // One tick in, its rate is all there is: the start's cost counted per image.
                Assert.Equal(seconds / tick, eta.SecondsPerImage(2), 12);
                continue;
            }
            if (t == 1)
            {
                // From the second tick on, the level's own rate and the start as a cost per phase.
                Assert.Equal(cost[0], eta.SecondsPerImage(2), 12);
                Assert.Equal(start, eta.SecondsPerPhase, 9);
            }
            long shown = (long)tick * ticks.Take(t + 1).Count(x => x.Phase.Index == phase.Index);
            double actual = ticks.Skip(t + 1).Sum(x => x.Seconds);
            double estimate = eta.Seconds(schedule, phase, shown);
            if (actual > 0) Assert.InRange(estimate / actual, 0.8, 1.25);
            else Assert.Equal(0, estimate, 9);
        }
    }
}
