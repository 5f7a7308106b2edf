"""Reply templates of the local model tier. A specialist picks a template and supplies its facts.

Every template renders from its facts alone; `render` raises KeyError on a missing fact (a bug in the
specialist, caught by the template tests), never sends a half-filled reply.
"""

from __future__ import annotations

from typing import Any

from triage.schemas import MAX_SUBJECT_CHARS
from triage.state import Draft, ReplyData

SIGN_OFF = "Best regards,\nNorthwind Support"

TEMPLATES: dict[str, str] = {
    "plan.answers": "You asked us about more than one thing; here is where each stands.\n\n{answers}",
    "billing.needs_customer": (
        "To look into charges we need to find your account. Please reply with your customer id (it starts with "
        "'cus_' and is shown under Settings > Billing) or the email address you signed up with."
    ),
    "billing.duplicate_refund_requested": (
        "You were charged {amount} twice: payment {payment_id} on {paid_on} duplicated payment {original_id}. "
        "We have requested a refund of {amount} for {payment_id} (request {request_id}). Refunds reach your "
        "account within 5-10 business days of approval."
    ),
    "billing.duplicate_refunded": (
        "You were charged twice: payment {payment_id} on {paid_on} duplicated payment {original_id}. We have "
        "refunded {amount} for {payment_id} (refund {refund_id}). It reaches your account within 5-10 business days."
    ),
    "billing.refunded": (
        "We have refunded {amount} of payment {payment_id} from {paid_on} (refund {refund_id}). It reaches your "
        "account within 5-10 business days."
    ),
    "billing.duplicate_already_handled": (
        "You were charged {amount} twice: payment {payment_id} on {paid_on} duplicated payment {original_id}. "
        "That duplicate has already been taken care of; its refund is {refund_status}. Refunds reach your account "
        "within 5-10 business days."
    ),
    "billing.no_duplicate_found": (
        "We checked your recent payments and found no duplicate charge. Your latest charges were:\n{payments}\n"
        "If one of these looks wrong, reply with its payment id and we will look at it together."
    ),
    "billing.failed_payment": (
        "Your payment of {amount} on {failed_on} did not go through ({failure_reason}). Invoice {invoice_id} is "
        "still open. Please update your card under Settings > Billing > Payment methods and we will retry the "
        "charge automatically within 24 hours."
    ),
    "billing.payments_ok": (
        "We checked your account and your recent payments all went through:\n{payments}\n"
        "If your bank shows something different, reply with the date and amount it shows."
    ),
    "billing.refund_status": (
        "Your refund of {amount} for payment {payment_id} is {refund_status} (recorded {refunded_on}). "
        "Card refunds take 5-10 business days to show on your statement after they are issued."
    ),
    "billing.refund_requested": (
        "We have requested a refund of {amount} for payment {payment_id} from {paid_on} (request {request_id}). "
        "Our billing team reviews refund requests within one business day."
    ),
    "billing.refund_outside_window": (
        "Payments older than {window_days} days fall outside our standard refund window, so we have passed your "
        "request to the billing team (ticket {ticket_id}), who will get back to you within one business day."
    ),
    "billing.invoices": (
        "Here are your most recent invoices:\n{invoices}\nYou can download any of them as a PDF under "
        "Settings > Billing > Invoices."
    ),
    "billing.kb_answer": "{article_title}\n\n{article_summary}\n\n{article_steps}",
    "technical.kb_answer": (
        "This looks like a known issue with a fix: {article_title}.\n\n{article_summary}\n\n{article_steps}\n\n"
        "If these steps do not solve it, reply to this message and we will open an engineering ticket."
    ),
    "technical.engineering_ticket": (
        "We could not find a documented fix for this, so we have opened an engineering ticket ({ticket_id}, "
        "priority {priority}). An engineer will follow up {response_time}."
    ),
    "technical.outage_ticket": (
        "Thank you for reporting this. We have opened an engineering ticket ({ticket_id}, priority {priority}) and "
        "our on-call engineers will follow up {response_time}. Live updates on incidents are posted at "
        "status.northwind.example.com."
    ),
    "account.needs_customer": (
        "To make changes to an account we need to identify it. Please reply with your customer id (it starts "
        "with 'cus_') or the email address you signed up with."
    ),
    "account.password_reset": (
        "We have sent a password reset link to the email address on your account ({masked_email}); it is valid "
        "for 60 minutes (request {request_id}). If it does not arrive within a few minutes, check your spam folder."
    ),
    "account.unlock": (
        "Your account was locked after several failed sign-in attempts. We have sent an unlock and password reset "
        "link to {masked_email} (request {request_id}); it is valid for 60 minutes."
    ),
    "account.account_ok": (
        "Your account is active and not locked. If you cannot sign in, use 'Forgot password' on the sign-in page "
        "to get a reset link at {masked_email}."
    ),
    "account.suspended": (
        "Your account is suspended, which a support agent has to lift. We have passed it to the account team "
        "(ticket {ticket_id}); they will contact you within one business day."
    ),
    "account.email_change": (
        "We have sent a confirmation link to {new_email} (request {request_id}). Your sign-in email changes once "
        "you open that link; until then, keep using {masked_email}."
    ),
    "account.email_change_needs_address": (
        "Happy to change your email address. Please reply with the new address you would like to use; we will "
        "send a confirmation link to it."
    ),
    "account.profile_update": (
        "We have recorded your request to update your profile (request {request_id}). {article_hint}"
    ),
    "account.plan_change": (
        "We have scheduled the change from {current_plan} to {target_plan} ({target_price} per month), effective "
        "from your next billing date (request {request_id}). Any difference is prorated on your next invoice."
    ),
    "account.plan_changed": ("Your plan is now {target_plan} (request {request_id}). {proration_note}"),
    "account.closed": (
        "Your account is closed and your subscription canceled (request {request_id}). {refund_note} An export of "
        "your data is on its way, and your data is deleted 30 days after it. We are sorry to see you go."
    ),
    "account.change_rolled_back": (
        "We could not complete your {change}: a step failed, so we put everything back as it was. A member of our "
        "team has your request (ticket {ticket_id}) and will finish it with you."
    ),
    "account.plan_options": (
        "Happy to change your plan. You are on {current_plan}. Our plans are:\n{plans}\nReply with the plan you "
        "would like and we will make the change."
    ),
    "account.deletion_requested": (
        "We have received your request to delete your account and its data (request {request_id}). For your "
        "security a member of our team confirms deletions; you will hear from us within 2 business days, and "
        "nothing is deleted before then."
    ),
    "account.deleted": (
        "Your account has been closed and its data is scheduled for erasure (request {request_id}), as you asked. "
        "We are sorry to see you go."
    ),
    "account.data_export_started": (
        "Your data export has started (request {request_id}). You will receive a download link at {masked_email} "
        "as soon as it is ready, and within 30 days at the latest."
    ),
    "account.data_export_requested": (
        "We have started an export of your personal data (request {request_id}). You will receive a download "
        "link at {masked_email} within 30 days, as data protection law requires; usually it is much sooner."
    ),
    "account.clarify": (
        "We would like to help, but we are not sure what you need yet. Could you tell us what is wrong with your "
        "account, or what you would like us to change? If you want your account closed or a copy of your data, "
        "say so in your reply: we only start those on an explicit request."
    ),
    "account.kb_answer": "{article_title}\n\n{article_summary}\n\n{article_steps}",
    "general.kb_answer": "{article_summary}\n\n{article_steps}",
    "general.feedback_thanks": (
        "Thank you for taking the time to tell us this. We have shared your feedback with the product team, "
        "who read every message."
    ),
    "general.off_topic": (
        "Thank you for getting in touch. This inbox answers questions about Northwind accounts, billing, orders and "
        "the Northwind apps, and we could not tell what you need from us here. If there is something about your "
        "account or our products we can help with, reply with a few details and we will take it from there."
    ),
    "general.fallback": (
        "Thank you for your message. We could not match it to an answer we have ready. Could you tell us a little "
        "more: what you were trying to do, what happened, and your customer id if you have an account? Our team "
        "reads every reply, Monday to Friday, 8am-6pm CET."
    ),
    "approval.rejected": (
        "We have reviewed your request and cannot carry it out as asked. A member of our team will follow up with "
        "you about the next steps within one business day."
    ),
    "release.fixed": (
        "Good news: release {version} fixes what you reported.\n\n{fixes}\n\nWhat changed: {summary}\n\n"
        "We have closed the ticket(s) above. If you still see the problem after updating, reply to this message and "
        "we will look at it again.{open_elsewhere}"
    ),
    "escalation.handed_off": (
        "We have passed your message to a senior member of our support team (ticket {ticket_id}, priority "
        "{priority}). A person will reply {response_time}."
    ),
}

_TONE = {
    "angry": "I am sorry about the trouble this has caused you, and I understand your frustration.",
    "negative": "I am sorry about the trouble this has caused you.",
}


def render(draft: Draft) -> ReplyData:
    """Render a draft into a greeting, an optional apology (by sentiment), the template and the sign-off."""
    facts: dict[str, Any] = draft["facts"]
    body = TEMPLATES[draft["template"]].format_map(facts)
    name = facts.get("customer_name")
    greeting = f"Hi {name.split()[0]}," if isinstance(name, str) and name.strip() else "Hello,"
    parts = [greeting]
    tone = _TONE.get(str(facts.get("sentiment", "")))
    if tone:
        parts.append(tone)
    parts += [body, SIGN_OFF]
    return ReplyData(
        subject=reply_subject(str(facts.get("ticket_subject") or "")),
        body="\n\n".join(parts),
        template=draft["template"],
    )


def reply_subject(subject: str, *, limit: int = MAX_SUBJECT_CHARS) -> str:
    """`Re: <subject>`, shortened at a word with an ellipsis when it would exceed the outbox's subject limit."""
    subject = " ".join(subject.split())
    if not subject:
        return "Your Northwind support request"
    reply = subject if subject[:3].lower() == "re:" else f"Re: {subject}"
    if len(reply) <= limit:
        return reply
    cut = reply[: limit - 1]
    word_end = cut.rfind(" ")
    if word_end > limit // 2:
        cut = cut[:word_end]
    return cut.rstrip() + "…"
