"""Butcher tableaux of the explicit Runge–Kutta methods of ``la.ode`` — a new method is one entry.

Fixed-step: ``euler`` (1), ``midpoint`` (2), ``heun2`` (2), ``heun3`` (3), ``rk4`` (4, classical).
Adaptive (embedded pairs, error weights ``e = b - b_hat``): ``adaptive_heun`` (Heun–Euler 2(1)),
``fehlberg2`` (Fehlberg 2(1)), ``bosh3`` (Bogacki–Shampine 3(2)), ``dopri5`` (Dormand–Prince
5(4)), ``dopri8`` (Dormand–Prince 8(7), Prince & Dormand 1981). The coefficients are the published
ones, in the same form as torchdiffeq's, so that step sequences and function-evaluation counts
match it.

``fsal`` means the last stage is evaluated at ``t + h`` and reused as the first stage of the next
step. For dopri5 / bosh3 / dopri8 that stage is ``f(t + h, y_{n+1})`` (the last row of ``a`` is
``b``). For adaptive_heun and fehlberg2 it is ``f`` at the embedded lower-order solution, as in
torchdiffeq (and in Fehlberg's original method): the reused derivative is off by O(h^2), which
changes the local error by O(h^3) and keeps the order 2.

Dense output: dopri5 has its own 4th-order continuous extension (``dense``); dopri8,
fehlberg2 and adaptive_heun use the quartic through ``y_n, y_{n+1}, f_n, f_{n+1}`` and a midpoint
value ``y_n + h * mid . K``, as torchdiffeq does; bosh3 uses the cubic Hermite interpolant through
``y_n, y_{n+1}, f_n, f_{n+1}`` (3rd order, like the method; torchdiffeq's quartic with a 2nd-order
midpoint is less accurate). dopri8's quartic is only 4th order: interior outputs are less accurate
than its steps.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["METHODS", "Tableau"]


@dataclass(frozen=True)
class Tableau:
    """Butcher tableau of an explicit Runge–Kutta method (python floats; tensors built per solve).

    Attributes:
        name: the method's name (key of :data:`METHODS`).
        order: order of the propagated solution (sets the step-size controller's exponent
            ``1 / order`` for adaptive methods).
        c: (S,) stage times as fractions of the step.
        a: S rows; row i has i entries ``a_i0 .. a_i,i-1`` (row 0 is empty).
        b: (S,) weights of the propagated solution.
        e: (S,) error weights ``b - b_hat``; None for fixed-step methods.
        dense: (S,) coefficients of Dormand–Prince's 4th-order continuous extension (dopri5 only).
        mid: (S,) weights giving ``y(t + h/2) ~ y + h * mid . K`` for the quartic dense output
            (None and no ``dense``: cubic Hermite).
        fsal: reuse the last stage (evaluated at ``t + h``) as the next step's first stage.
    """

    name: str
    order: int
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    e: tuple[float, ...] | None = None
    dense: tuple[float, ...] | None = None
    mid: tuple[float, ...] | None = None
    fsal: bool = False

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return self.e is not None

    @property
    def last_stage_is_solution(self) -> bool:
        """True if the last stage's state is ``y_{n+1}`` (last row of ``a`` equals ``b``)."""
        return self.fsal and self.b[-1] == 0.0 and tuple(self.a[-1]) == tuple(self.b[:-1])


_EULER = Tableau("euler", 1, (0.0,), ((),), (1.0,))
_MIDPOINT = Tableau("midpoint", 2, (0.0, 0.5), ((), (0.5,)), (0.0, 1.0))
_HEUN2 = Tableau("heun2", 2, (0.0, 1.0), ((), (1.0,)), (0.5, 0.5))
_HEUN3 = Tableau(
    "heun3", 3, (0.0, 1 / 3, 2 / 3), ((), (1 / 3,), (0.0, 2 / 3)), (1 / 4, 0.0, 3 / 4)
)
_RK4 = Tableau(
    "rk4",
    4,
    (0.0, 0.5, 0.5, 1.0),
    ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    (1 / 6, 1 / 3, 1 / 3, 1 / 6),
)

_ADAPTIVE_HEUN = Tableau(
    "adaptive_heun", 2, (0.0, 1.0), ((), (1.0,)), (0.5, 0.5), e=(0.5, -0.5), mid=(0.5, 0.0),
    fsal=True,
)
_FEHLBERG2 = Tableau(
    "fehlberg2",
    2,
    (0.0, 0.5, 1.0),
    ((), (0.5,), (1 / 256, 255 / 256)),
    (1 / 512, 255 / 256, 1 / 512),
    e=(-1 / 512, 0.0, 1 / 512),
    mid=(0.0, 0.5, 0.0),
    fsal=True,
)
_BOSH3 = Tableau(
    "bosh3",
    3,
    (0.0, 0.5, 0.75, 1.0),
    ((), (0.5,), (0.0, 0.75), (2 / 9, 1 / 3, 4 / 9)),
    (2 / 9, 1 / 3, 4 / 9, 0.0),
    e=(2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8),
    fsal=True,
)

_DOPRI5_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
# Embedded 4th-order weights for the error estimate: Shampine's (1986) choice, as in torchdiffeq
# (Hairer's DOPRI5 uses 5179/57600, 0, 7571/16695, 393/640, -92097/339200, 187/2100, 1/40; both
# satisfy the 4th-order conditions, Shampine's has the smaller 5th-order residual). With these,
# rtol/atol mean the same local error test as in torchdiffeq.
_DOPRI5_BHAT = (
    1951 / 21600, 0.0, 22642 / 50085, 451 / 720, -12231 / 42400, 649 / 6300, 1 / 60,
)
_DOPRI5 = Tableau(
    "dopri5",
    5,
    (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    (
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        _DOPRI5_B[:6],
    ),
    _DOPRI5_B,
    e=tuple(b - bh for b, bh in zip(_DOPRI5_B, _DOPRI5_BHAT)),
    # Hairer's DOPRI5 dense output (contd5): coefficients d_i of the 4th-order interpolant.
    dense=(
        -12715105075 / 11282082432,
        0.0,
        87487479700 / 32700410799,
        -10690763975 / 1880347072,
        701980252875 / 199316789632,
        -1453857185 / 822651844,
        69997945 / 29380423,
    ),
    fsal=True,
)

# Dormand–Prince 8(7) (Prince & Dormand, 1981, "High order embedded Runge-Kutta formulae"), with
# the rational approximations of its coefficients used by torchdiffeq.
_D8_C = (
    0.0, 1 / 18, 1 / 12, 1 / 8, 5 / 16, 3 / 8, 59 / 400, 93 / 200, 5490023248 / 9719169821,
    13 / 20, 1201146811 / 1299019798, 1.0, 1.0, 1.0,
)
_D8_B = (
    14005451 / 335480064, 0.0, 0.0, 0.0, 0.0, -59238493 / 1068277825, 181606767 / 758867731,
    561292985 / 797845732, -1041891430 / 1371343529, 760417239 / 1151165299,
    118820643 / 751138087, -528747749 / 2220607170, 1 / 4, 0.0,
)
_D8_BHAT = (
    13451932 / 455176623, 0.0, 0.0, 0.0, 0.0, -808719846 / 976000145, 1757004468 / 5645159321,
    656045339 / 265891186, -3867574721 / 1518517206, 465885868 / 322736535,
    53011238 / 667516719, 2 / 45, 0.0, 0.0,
)
_D8_A = (
    (),
    (1 / 18,),
    (1 / 48, 1 / 16),
    (1 / 32, 0.0, 3 / 32),
    (5 / 16, 0.0, -75 / 64, 75 / 64),
    (3 / 80, 0.0, 0.0, 3 / 16, 3 / 20),
    (29443841 / 614563906, 0.0, 0.0, 77736538 / 692538347, -28693883 / 1125000000,
     23124283 / 1800000000),
    (16016141 / 946692911, 0.0, 0.0, 61564180 / 158732637, 22789713 / 633445777,
     545815736 / 2771057229, -180193667 / 1043307555),
    (39632708 / 573591083, 0.0, 0.0, -433636366 / 683701615, -421739975 / 2616292301,
     100302831 / 723423059, 790204164 / 839813087, 800635310 / 3783071287),
    (246121993 / 1340847787, 0.0, 0.0, -37695042795 / 15268766246, -309121744 / 1061227803,
     -12992083 / 490766935, 6005943493 / 2108947869, 393006217 / 1396673457,
     123872331 / 1001029789),
    (-1028468189 / 846180014, 0.0, 0.0, 8478235783 / 508512852, 1311729495 / 1432422823,
     -10304129995 / 1701304382, -48777925059 / 3047939560, 15336726248 / 1032824649,
     -45442868181 / 3398467696, 3065993473 / 597172653),
    (185892177 / 718116043, 0.0, 0.0, -3185094517 / 667107341, -477755414 / 1098053517,
     -703635378 / 230739211, 5731566787 / 1027545527, 5232866602 / 850066563,
     -4093664535 / 808688257, 3962137247 / 1805957418, 65686358 / 487910083),
    (403863854 / 491063109, 0.0, 0.0, -5068492393 / 434740067, -411421997 / 543043805,
     652783627 / 914296604, 11173962825 / 925320556, -13158990841 / 6184727034,
     3936647629 / 1978049680, -160528059 / 685178525, 248638103 / 1413531060, 0.0),
    _D8_B[:13],
)


def _dopri8_mid() -> tuple[float, ...]:
    """Weights of y(t + h/2): Hairer's DOP853 dense-output polynomials evaluated at theta = 1/2."""
    h = 0.5
    poly = {
        0: (-6.3448349392860401388, 22.1396504998094068976, -30.0610568289666450593,
            19.9990069333683970610, -6.6910181737837595697, 1.0),
        5: (-39.6107919852202505218, 116.4422149550342161651, -121.4999627731334642623,
            52.2273532792945524050, -7.6142658045872677172, 0.0),
        6: (20.3761213808791436958, -67.1451318825957197185, 83.1721004639847717481,
            -46.8919164181093621583, 10.7281392630428866124, 0.0),
        7: (7.3347098826795362023, -16.5672243527496524646, 9.5724507555993664382,
            -0.1890893225010595467, 0.5526637063753648783, 0.0),
        8: (32.8801774352459155182, -89.9916014847245016028, 87.8406057677205645007,
            -35.7075975946222072821, 4.2186562625665153803, 0.0),
        9: (-10.1588990526426760954, 22.6237489648532849093, -17.4152107770762969005,
            6.2736448083240352160, -0.6627209125361597559, 0.0),
        10: (-12.5401268098782561200, 32.2362340167355370113, -28.5903289514790976966,
             10.3160881272450748458, -1.2636789001135462218, 0.0),
        11: (29.5553001484516038033, -82.1020315488359848644, 81.6630950584341412934,
             -34.7650769866611817349, 5.4106037898590422230, 0.0),
        12: (-41.7923486424390588923, 116.2662185791119533462, -114.9375291377009418170,
             47.7457971078225540396, -7.0321379067945741781, 0.0),
        13: (20.3006925822100825485, -53.9020777466385396792, 50.2558364226176017553,
             -19.0082099341608028453, 2.3537586759714983486, 0.0),
    }
    mid = [0.0] * 14
    for i, (p5, p4, p3, p2, p1, p0) in poly.items():
        mid[i] = (p5 * h**5 + p4 * h**4 + p3 * h**3 + p2 * h**2 + p1 * h + p0) * h
    return tuple(mid)


_DOPRI8 = Tableau(
    "dopri8",
    8,
    _D8_C,
    _D8_A,
    _D8_B,
    e=tuple(b - bh for b, bh in zip(_D8_B, _D8_BHAT)),
    mid=_dopri8_mid(),
    fsal=True,
)

METHODS: dict[str, Tableau] = {
    tab.name: tab
    for tab in (
        _EULER, _MIDPOINT, _HEUN2, _HEUN3, _RK4,
        _ADAPTIVE_HEUN, _FEHLBERG2, _BOSH3, _DOPRI5, _DOPRI8,
    )
}
