// The room's surfaces: light baked into vertex colours, times a tiling texture and a tint.
// Nothing else is computed per pixel: software rasterizers pay for every instruction here.

#import bevy_pbr::forward_io::VertexOutput

@group(#{MATERIAL_BIND_GROUP}) @binding(0) var<uniform> tint: vec4<f32>;
@group(#{MATERIAL_BIND_GROUP}) @binding(1) var base: texture_2d<f32>;
@group(#{MATERIAL_BIND_GROUP}) @binding(2) var base_sampler: sampler;

@fragment
fn fragment(in: VertexOutput) -> @location(0) vec4<f32> {
#ifdef VERTEX_UVS_A
    var colour = tint * textureSample(base, base_sampler, in.uv);
#else
    var colour = tint;
#endif
#ifdef VERTEX_COLORS
    colour = colour * in.color;
#endif
    return vec4<f32>(colour.rgb, 1.0);
}
