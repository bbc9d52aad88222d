/* The activations of the C kernels, one X(...) line each, in the ids and with the formulas of
 * fastbp/activations.py (a test checks the ids and names agree):
 *   X(NAME, ID, NEEDS_Z, FORWARD, BACKWARD)
 * FORWARD is a = f(z); BACKWARD is dz = d·f'(z), written through a where it allows (NEEDS_Z 0),
 * else through z (the layer keeps Z). In scope where they expand: FT (float or double), z, a, d,
 * one = (T)1, alpha, and EXP, TANH, ERF for T. Softmax, a row operation, is FASTBP_SOFTMAX
 * below with code of its own in _act.h. */
#ifndef FASTBP_ACT_LIST_H
#define FASTBP_ACT_LIST_H

#define FASTBP_SOFTMAX_ID 5

#define FASTBP_ELEMENTWISE_ACTIVATIONS(X)                                                      \
    X(LINEAR, 0, 0, z, d)                                                                      \
    /* e^-z may overflow to inf for z << 0: exactly 0, no NaN */                               \
    X(SIGMOID, 1, 0, one / (one + EXP(-z)), d * (a * (one - a)))                               \
    X(TANH, 2, 0, TANH(z), d * (one - a * a))                                                  \
    /* z < 0 ? 0 : z, not z > 0 ? z : 0: NaN stays NaN, as in the reference (one vmaxps) */   \
    X(RELU, 3, 0, z < 0 ? 0 : z, a > 0 ? d : 0)                                                \
    /* a > 0 exactly where z > 0: alpha >= 0 (checked at the API edge) */                      \
    X(LEAKY_RELU, 4, 0, z > 0 ? z : alpha * z, a > 0 ? d : alpha * d)                          \
    /* Keras' exact GELU, z·Φ(z); f' = Φ(z) + z·φ(z) */                                        \
    X(GELU, 6, 1, (FT)0.5 * z * (one + ERF(z * (FT)0.7071067811865476)),                         \
      d * ((FT)0.5 * (one + ERF(z * (FT)0.7071067811865476))                                     \
           + z * EXP((FT)-0.5 * z * z) * (FT)0.3989422804014327))

#define FASTBP_ACT_ENUM(NAME, ID, NEEDS_Z, FWD, BWD) FASTBP_##NAME = ID,
enum { FASTBP_ELEMENTWISE_ACTIVATIONS(FASTBP_ACT_ENUM) FASTBP_SOFTMAX = FASTBP_SOFTMAX_ID };

/* "name\0id" pairs for the Cython module's ACTIVATION_IDS */
#define FASTBP_ACT_NAME(NAME, ID, NEEDS_Z, FWD, BWD) #NAME,
#define FASTBP_ACT_ID(NAME, ID, NEEDS_Z, FWD, BWD) ID,
static const char* const fastbp_act_names[] = {
    FASTBP_ELEMENTWISE_ACTIVATIONS(FASTBP_ACT_NAME) "SOFTMAX"};
static const int fastbp_act_ids[] = {FASTBP_ELEMENTWISE_ACTIVATIONS(FASTBP_ACT_ID)
                                         FASTBP_SOFTMAX_ID};
enum { FASTBP_N_ACTIVATIONS = sizeof(fastbp_act_ids) / sizeof(fastbp_act_ids[0]) };
#define FASTBP_ACT_NEEDS_Z(NAME, ID, NEEDS_Z, FWD, BWD) (act == ID && NEEDS_Z) ||
static inline int fastbp_act_needs_z(int act) {
    return FASTBP_ELEMENTWISE_ACTIVATIONS(FASTBP_ACT_NEEDS_Z) 0;
}
#endif
